// flextron bench --speculative: self-speculative decoding beside plain decoding of the same
// prompts (eval/speculative_speed.h), with the draft, its acceptance and the speed-up.
#include <cstdio>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "bench_speculative.h"
#include "core/error.h"
#include "eval/speculative_speed.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "runtime/fast_decoder.h"
#include "runtime/threads.h"

namespace flextron::cli {

namespace {
std::vector<std::string> read_prompts(const std::string& path) {
  if (path.empty()) return eval::default_speed_prompts();
  std::ifstream in(path);
  if (!in) fail(path, "cannot read the prompt file");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) prompts.push_back(line);
  if (prompts.empty()) fail(path, "has no prompt (one per line)");
  return prompts;
}
}  // namespace

void run_speculative_bench(const SpeculativeBenchArgs& a) {
  runtime::use_threads(a.threads);
  auto loaded = io::load_model_dir(a.model);
  if (!loaded.tokenizer) fail(a.model, "no tokenizer in this model directory");
  runtime::EngineOptions eo;
  eo.threads = a.threads;
  eo.format = runtime::qk::resolve_format(a.quant, loaded.stored_weights, "--quant");
  runtime::FastDecoder engine(*loaded.model, eo);
  const auto& config = engine.config();
  const auto draft = route::pick_draft(a.speculative.draft, a.model, *loaded.model, loaded.space,
                                       engine, *loaded.tokenizer, {}, a.speculative.draft_tokens);
  eval::SpeculativeSpeedOptions options;
  options.tokens = a.tokens;
  options.repeat = a.repeat;
  options.sampling = a.sampling;
  options.speculative = {draft.chosen.arch, a.speculative.draft_tokens};
  const auto prompts = read_prompts(a.prompts);
  std::fprintf(stderr, "draft: %s (%s); %zu prompts x %lld tokens, %lld repeats, %d threads\n",
               draft.chosen.label.c_str(),
               model::describe_architecture(draft.chosen.arch, config).c_str(), prompts.size(),
               static_cast<long long>(a.tokens), static_cast<long long>(a.repeat),
               engine.threads());
  const auto speed =
      eval::measure_speculative_speed(engine, *loaded.tokenizer, prompts, options, [&](int64_t r) {
        std::fprintf(stderr, "repeat %lld/%lld done\n", static_cast<long long>(r),
                     static_cast<long long>(a.repeat));
      });
  nlohmann::json j = speed.to_json();
  j["model"] = a.model;
  j["threads"] = engine.threads();
  j["weights"] = runtime::qk::format_name(eo.format);
  j["temperature"] = a.sampling.temperature;
  j["tokens_per_prompt"] = a.tokens;
  j["draft_tokens"] = a.speculative.draft_tokens;
  j["draft"] = draft.to_json(config);
  if (!a.json_out.empty()) io::write_text_atomically(a.json_out, j.dump(2) + "\n");
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("%-12s %12s %12s\n", "decode", "tok/s", "vs plain");
  std::printf("%-12s %12.1f %12s\n", "plain", speed.plain_median(), "1.00x");
  std::printf("%-12s %12.1f %11.2fx\n", "speculative", speed.speculative_median(), speed.speedup());
  std::printf("draft %s: %.0f%% of drafted tokens accepted, %.2f tokens per verifying pass\n",
              draft.chosen.label.c_str(), 100.0 * speed.stats.acceptance_rate(),
              speed.stats.tokens_per_round());
  if (a.sampling.temperature == 0.0)
    std::printf("greedy texts identical to plain decoding: %s (%lld of %lld prompts differ)\n",
                speed.mismatches == 0 ? "yes" : "NO", static_cast<long long>(speed.mismatches),
                static_cast<long long>(speed.prompts));
}

}  // namespace flextron::cli
