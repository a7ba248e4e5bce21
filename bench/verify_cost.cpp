// What a speculative round costs on the fast runtime: a verifying pass of k+1 rows
// (FastDecoder::verify) and a draft's decode step, each relative to one decode step of the full
// model, timed interleaved round by round (medians), at the KV length `--position`. These are the
// inputs of DraftLength's cost model (runtime/speculative.h).
//
// usage: verify_cost --model DIR [--draft mlp=0.3,attn=0.3] [--rounds 9] [--threads 1]
//                    [--position 128] [--quant f32|q8_0|q4_0] [--json FILE]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "runtime/fast_decoder.h"
#include "runtime/speculative.h"
#include "runtime/threads.h"

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, draft_text = "mlp=0.3,attn=0.3", quant = "f32",
                         json_path = "bench_verify_cost.json";
  int rounds = 9, threads = 1;
  int64_t position = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model")
      model_dir = value;
    else if (flag == "--draft")
      draft_text = value;
    else if (flag == "--rounds")
      rounds = std::stoi(value);
    else if (flag == "--threads")
      threads = std::stoi(value);
    else if (flag == "--position")
      position = std::stoll(value);
    else if (flag == "--quant")
      quant = value;
    else if (flag == "--json")
      json_path = value;
  }
  if (model_dir.empty()) {
    std::fprintf(stderr, "usage: verify_cost --model DIR [--draft ARCH] [--rounds N] ...\n");
    return 2;
  }
  namespace rt = flextron::runtime;
  rt::use_threads(threads);
  auto loaded = flextron::io::load_model_dir(model_dir);
  rt::EngineOptions options;
  options.threads = threads;
  options.format = rt::qk::resolve_format(quant, loaded.stored_weights, "--quant");
  rt::FastDecoder engine(*loaded.model, options);
  const auto& config = engine.config();
  const auto draft = flextron::model::parse_architecture(draft_text, config, loaded.space);
  const flextron::model::Architecture full;
  const int64_t steps = 32;  // timed calls per round and kind
  std::vector<int64_t> context(static_cast<size_t>(position), 5);
  std::vector<int64_t> rows(rt::kMaxDraftTokens + 1, 7);
  std::vector<float> logits(static_cast<size_t>((rt::kMaxDraftTokens + 1) * config.vocab_size));
  auto full_cache = engine.make_cache(position + 64, full);
  auto draft_cache = engine.make_cache(position + 64, draft);
  engine.prefill(context, full_cache, full);
  engine.prefill(context, draft_cache, draft);
  using clock = std::chrono::steady_clock;
  auto time_per_call = [&](auto&& call, rt::EngineCache& cache) {
    const auto t0 = clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      call();
      cache.truncate(position);
    }
    return std::chrono::duration<double>(clock::now() - t0).count() / steps;
  };
  const std::vector<int64_t> ks{0, 1, 2, 3, 4, 6, 8};
  std::vector<std::vector<double>> verify_ratio(ks.size()), batched_ratio(ks.size());
  std::vector<double> draft_ratio;
  for (int r = 0; r < rounds; ++r) {
    const double decode = time_per_call([&] { engine.decode(7, full_cache, full); }, full_cache);
    draft_ratio.push_back(
        time_per_call([&] { engine.decode(7, draft_cache, draft); }, draft_cache) / decode);
    for (size_t i = 0; i < ks.size(); ++i)
      verify_ratio[i].push_back(
          time_per_call(
              [&] { engine.verify(rows.data(), ks[i] + 1, full_cache, full, logits.data()); },
              full_cache) /
          decode);
    for (size_t i = 0; i < ks.size(); ++i)
      batched_ratio[i].push_back(
          time_per_call(
              [&] { engine.prefill(rows.data(), ks[i] + 1, full_cache, full, logits.data()); },
              full_cache) /
          decode);
  }
  nlohmann::json j = {{"model", model_dir},
                      {"weights", rt::qk::format_name(options.format)},
                      {"threads", engine.threads()},
                      {"position", position},
                      {"draft", flextron::model::describe_architecture(draft, config)},
                      {"draft_decode_vs_decode", median(draft_ratio)}};
  std::printf("draft %s: decode step %.3f of the full model's\n",
              flextron::model::describe_architecture(draft, config).c_str(), median(draft_ratio));
  std::printf("%6s %16s %18s %18s\n", "rows", "verify / decode", "extra per row",
              "batched / decode");
  for (size_t i = 0; i < ks.size(); ++i) {
    const double m = median(verify_ratio[i]);
    const double extra = ks[i] > 0 ? (m - 1.0) / static_cast<double>(ks[i]) : 0.0;
    std::printf("%6lld %16.3f %18.3f %18.3f\n", static_cast<long long>(ks[i] + 1), m, extra,
                median(batched_ratio[i]));
    j["batched_vs_decode"][std::to_string(ks[i] + 1)] = median(batched_ratio[i]);
    j["verify_vs_decode"][std::to_string(ks[i] + 1)] = m;
  }
  std::ofstream(json_path) << j.dump(2) << "\n";
  std::printf("written: %s\n", json_path.c_str());
  return 0;
}
