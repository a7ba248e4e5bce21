// flextron bench: prefill and decode tokens/s at several budgets, in the manner of llama-bench.
// Each run feeds P tokens (BOS, then seeded random tokens) in one batched prefill and then G
// greedy decode steps; every figure is the median of R runs, the budgets (and a reference
// engine's command line, when given) measured in interleaved rounds so the machine's load drifts
// over all of them alike.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <regex>
#include <sstream>

#include <sys/wait.h>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "bench_speculative.h"
#include "commands.h"
#include "core/error.h"
#include "core/parse.h"
#include "core/progress_line.h"
#include "core/timing.h"
#include "io/model_dir.h"
#include "number_options.h"
#include "route/select.h"
#include "runtime/allocator.h"
#include "runtime/blas_kernels.h"
#include "runtime/fast_decoder.h"
#include "runtime/fast_generate.h"
#include "runtime/quant_kernels.h"
#include "runtime/threads.h"

namespace flextron::cli {

namespace {

struct BenchArgs {
  std::string model;
  std::string budgets = "1";
  std::string router = "uniform";
  int64_t prompt_tokens = 0;  // 0: 128, or half the model's context if shorter
  int64_t gen_tokens = 0;     // 0: 128, or what the context leaves after the prompt
  int64_t repeat = 5;
  std::string runtime = "fast";
  std::string reference_cmd;
  std::string reference_regex = "achieved tok/s: *([0-9.eE+-]+)";
  // Which of our figures the reference's tokens/s is set against: auto is prefill when one
  // token is generated (a prompt-only run), decode otherwise.
  std::string reference_phase = "auto";
  int threads = 0;
  bool json = false;
  std::string json_out;
  std::string quant = "auto";
  std::string ppl_data;
  int64_t ppl_tokens = 4096;
  // --speculative: speculative beside plain decoding of real prompts instead of the table.
  SpeculativeArgs speculative;
  std::string prompts;
  runtime::SamplingOptions sampling{0.0, 1.0, 42};
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Speed {
  double prefill = 0.0;  // tokens/s
  double decode = 0.0;
};

class FastRun;

struct Row {
  std::string runtime;  // "fast" (f32 weights), "fast-q8_0" / "fast-q4_0", or "torch"
  double budget = 1.0;
  model::Architecture arch;
  std::vector<double> prefill, decode;  // tokens/s of each run
  FastRun* fast = nullptr;              // fast rows
  int64_t weights_bytes = 0;            // what the fast row's engine holds
  double perplexity = 0.0;              // with --ppl-data
};

// One architecture on the fast runtime: its own cache, reused by every run.
class FastRun {
 public:
  FastRun(runtime::FastDecoder& engine, const model::Architecture& arch, int64_t capacity)
      : engine_(engine), arch_(arch), cache_(engine.make_cache(capacity, arch)) {}
  Speed run(const std::vector<int64_t>& prompt, int64_t steps) {
    const int64_t vocab = engine_.config().vocab_size;
    auto argmax = [vocab](const float* l) {
      return static_cast<int64_t>(std::max_element(l, l + vocab) - l);
    };
    cache_.reset();
    auto start = std::chrono::steady_clock::now();
    int64_t next = argmax(engine_.prefill(prompt, cache_, arch_));
    Speed s;
    s.prefill = static_cast<double>(prompt.size()) / seconds_since(start);
    start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < steps; ++i) next = argmax(engine_.decode(next, cache_, arch_));
    s.decode = static_cast<double>(steps) / seconds_since(start);
    return s;
  }
  int64_t cache_bytes() const { return cache_.bytes(); }
  runtime::FastDecoder& engine() { return engine_; }

 private:
  runtime::FastDecoder& engine_;
  model::Architecture arch_;
  runtime::EngineCache cache_;
};

// The same work through TransformerImpl::forward with its KV cache.
Speed torch_run(model::TransformerImpl& m, const model::Architecture& arch,
                const std::vector<int64_t>& prompt, int64_t steps) {
  c10::InferenceMode inference;
  const auto* a = arch.empty() ? nullptr : &arch;
  auto cache = m.make_cache(1, static_cast<int64_t>(prompt.size()) + steps, a);
  auto start = std::chrono::steady_clock::now();
  auto logits = m.forward(torch::tensor(prompt).unsqueeze(0), &cache, a);
  int64_t next = logits[0][-1].argmax().item<int64_t>();
  Speed s;
  s.prefill = static_cast<double>(prompt.size()) / seconds_since(start);
  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < steps; ++i)
    next = m.forward(torch::full({1, 1}, next, torch::kLong), &cache, a)[0][0]
               .argmax()
               .item<int64_t>();
  s.decode = static_cast<double>(steps) / seconds_since(start);
  return s;
}

struct ReferenceRun {
  double wall_seconds = 0.0;
  double reported = -1.0;  // tokens/s the engine printed; < 0 when the pattern did not match
};

ReferenceRun run_reference(const std::string& command, const std::regex& pattern) {
  ReferenceRun r;
  const std::string shell = "(" + command + ") 2>&1";
  auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(shell.c_str(), "r");
  if (pipe == nullptr) fail("--reference-cmd", "cannot run \"" + command + "\"");
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  r.wall_seconds = seconds_since(start);
  if (status != 0) {
    // pclose returns a wait status: the exit code or the signal is inside it.
    const std::string how =
        WIFEXITED(status)     ? "exited with status " + std::to_string(WEXITSTATUS(status))
        : WIFSIGNALED(status) ? "was killed by signal " + std::to_string(WTERMSIG(status))
                              : "failed (wait status " + std::to_string(status) + ")";
    fail("--reference-cmd", "\"" + command + "\" " + how + ": " + out.substr(0, 300));
  }
  std::smatch m;
  if (std::regex_search(out, m, pattern) && m.size() > 1) r.reported = std::stod(m[1].str());
  return r;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("--ppl-data", "cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A field of /proc/self/status ("VmRSS", "VmHWM": resident set now, its peak) in bytes; 0
// where unavailable.
int64_t status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return 0;
}

// Resets the peak to the current resident set (Linux >= 4.0), so the peak read afterwards is
// the one reached while generating, not while loading.
void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
}

double mib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

model::Architecture budget_architecture(double budget, const BenchArgs& a,
                                        io::LoadedModel& loaded) {
  const auto& c = loaded.model->config();
  if (a.router == "static") {
    route::Budget b;
    b.value = budget;
    return route::plan_budget(a.model, *loaded.model, loaded.space, b, route::RouterKind::Static)
        .arch;
  }
  if (budget >= 1.0) return {};
  model::Architecture arch;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    arch.push_back(
        {model::mlp_width_for_fraction(budget, c.layer_mlp(l), loaded.space.mlp_multiple),
         model::kv_groups_for_fraction(budget, c.layer_kv_heads(l))});
  return arch;
}

void run_bench(BenchArgs a) {
  const auto budgets = parse_double_list(a.budgets, "--budgets");
  for (double b : budgets)
    if (!(b > 0.0 && b <= 1.0)) fail("--budgets", "each budget must be in (0, 1]");
  if (a.prompt_tokens < 0) fail("--prompt-tokens", "must be >= 1");
  if (a.gen_tokens < 0) fail("--gen-tokens", "must be >= 1");
  if (a.repeat < 1) fail("--repeat", "must be >= 1");
  runtime::use_threads(a.threads);
  // What the process holds before any model: LibTorch and the libraries it loads.
  const int64_t baseline = status_bytes("VmRSS");
  io::LoadOptions options;
  options.with_tokenizer = !a.ppl_data.empty();
  auto loaded = io::load_model_dir(a.model, options);
  runtime::release_freed_memory();  // the file buffers of the load
  auto& m = *loaded.model;
  const auto c = m.config();
  const int64_t parameters = m.parameter_count();
  // Defaults follow the model, so they never exceed its context.
  if (a.prompt_tokens == 0)
    a.prompt_tokens = std::max<int64_t>(1, std::min<int64_t>(128, c.max_position_embeddings / 2));
  if (a.gen_tokens == 0)
    a.gen_tokens =
        std::max<int64_t>(1, std::min<int64_t>(128, c.max_position_embeddings - a.prompt_tokens));
  if (a.prompt_tokens + a.gen_tokens > c.max_position_embeddings)
    fail("--prompt-tokens", "prompt plus generated tokens exceed the model's context of " +
                                std::to_string(c.max_position_embeddings));

  std::vector<int64_t> prompt{c.bos_token_id};
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int64_t> pick(3, c.vocab_size - 1);
  while (static_cast<int64_t>(prompt.size()) < a.prompt_tokens) prompt.push_back(pick(rng));

  const bool fast = a.runtime != "torch", with_torch = a.runtime != "fast";
  // One engine per weight format (--quant f32,q8_0,q4_0), each quantized once here.
  std::vector<std::pair<std::string, std::unique_ptr<runtime::FastDecoder>>> engines;
  if (fast)
    for (const auto& name : split_list(a.quant)) {
      runtime::EngineOptions eo;
      eo.threads = a.threads;
      eo.format = runtime::qk::resolve_format(name, loaded.stored_weights, "--quant");
      const std::string label = eo.format == runtime::qk::WeightFormat::F32
                                    ? "fast"
                                    : std::string("fast-") + runtime::qk::format_name(eo.format);
      engines.emplace_back(label, std::make_unique<runtime::FastDecoder>(m, eo));
    }
  if (fast && engines.empty()) fail("--quant", "names no weight format");
  runtime::FastDecoder* engine = engines.empty() ? nullptr : engines.front().second.get();
  std::vector<Row> rows;
  std::vector<std::unique_ptr<FastRun>> fast_runs;
  int64_t kv_bytes = 0;
  for (double b : budgets) {
    auto arch = budget_architecture(b, a, loaded);
    for (auto& [label, e] : engines) {
      fast_runs.push_back(std::make_unique<FastRun>(*e, arch, a.prompt_tokens + a.gen_tokens));
      kv_bytes += fast_runs.back()->cache_bytes();
      Row row{label, b, arch, {}, {}, fast_runs.back().get()};
      row.weights_bytes = e->weights().bytes();
      rows.push_back(row);
    }
    if (with_torch) rows.push_back(Row{"torch", b, arch, {}, {}});
  }
  // Without torch rows the model is not needed: the engines hold every weight they read (the
  // model's o and down would stay beside their transposed copies).
  if (!with_torch) loaded.model = nullptr;
  runtime::release_freed_memory();  // and the quantization's temporaries
  const std::regex pattern(a.reference_regex);
  std::vector<ReferenceRun> reference;

  // Untimed rounds for at least a second warm caches and pages, and outlast the spinning of
  // the thread pools the load used (OpenBLAS's and LibTorch's idle threads spin for a while
  // after their last job, taking a core from the engine's team); then R interleaved rounds.
  reset_peak_rss();
  auto run_row = [&](const Row& row) {
    return row.fast ? row.fast->run(prompt, a.gen_tokens)
                    : torch_run(m, row.arch, prompt, a.gen_tokens);
  };
  const auto warmup_start = std::chrono::steady_clock::now();
  for (int64_t round = 0; round < 100 && (round == 0 || seconds_since(warmup_start) < 1.0); ++round)
    for (auto& row : rows) run_row(row);
  ProgressLine line;  // (quiet with --json)
  for (int64_t round = 1; round <= a.repeat; ++round) {
    for (auto& row : rows) {
      const Speed s = run_row(row);
      row.prefill.push_back(s.prefill);
      row.decode.push_back(s.decode);
    }
    if (!a.reference_cmd.empty()) reference.push_back(run_reference(a.reference_cmd, pattern));
    if (!a.json)
      line.updatef("round %lld/%lld", static_cast<long long>(round),
                   static_cast<long long>(a.repeat));
  }
  line.finish();
  const int64_t peak = status_bytes("VmHWM");
  int64_t weights = 0;
  for (const auto& [label, e] : engines) weights += e->weights().bytes();
  if (!a.ppl_data.empty()) {
    // Perplexity on the first --ppl-tokens tokens of a text, windows of up to 256 tokens.
    auto tokens = loaded.tokenizer->encode(read_text(a.ppl_data), /*add_bos=*/true);
    if (static_cast<int64_t>(tokens.size()) > a.ppl_tokens) tokens.resize(a.ppl_tokens);
    for (auto& row : rows)
      if (row.fast)
        row.perplexity = runtime::engine_perplexity(row.fast->engine(), tokens, 256, row.arch);
  }
  const int threads = fast ? engine->threads() : at::get_num_threads();

  nlohmann::json j;
  j["model"] = a.model;
  j["parameters"] = parameters;
  j["threads"] = threads;
  j["blas_kernels"] = runtime::blas_core();
  j["prompt_tokens"] = a.prompt_tokens;
  j["gen_tokens"] = a.gen_tokens;
  j["repeat"] = a.repeat;
  j["router"] = a.router;
  std::map<std::string, double> full_decode;   // median decode tokens/s at budget 1, per runtime
  std::map<std::string, double> full_prefill;  // and prefill tokens/s
  for (const auto& row : rows)
    if (row.budget >= 1.0) {
      full_decode[row.runtime] = median(row.decode);
      full_prefill[row.runtime] = median(row.prefill);
    }
  const bool reference_is_prefill =
      a.reference_phase == "prefill" || (a.reference_phase == "auto" && a.gen_tokens <= 1);
  const std::string phase = reference_is_prefill ? "prefill" : "decode";
  const auto& compared = reference_is_prefill ? full_prefill : full_decode;
  for (const auto& row : rows) {
    nlohmann::json r = {
        {"runtime", row.runtime},
        {"budget", row.budget},
        {"architecture",
         model::architecture_to_json(row.arch.empty() ? model::full_architecture(c) : row.arch)},
        {"architecture_summary", model::describe_architecture(row.arch, c)},
        {"prefill_tokens_per_second", median(row.prefill)},
        {"decode_tokens_per_second", median(row.decode)},
        {"decode_ms_per_token", 1000.0 / median(row.decode)},
        {"prefill_runs", row.prefill},
        {"decode_runs", row.decode}};
    if (row.fast) {
      r["weights"] = runtime::qk::format_name(row.fast->engine().weights().format());
      r["weights_bytes"] = row.weights_bytes;
    }
    if (row.perplexity > 0) r["perplexity"] = row.perplexity;
    if (full_decode.count(row.runtime))
      r["decode_time_vs_full"] = full_decode[row.runtime] / median(row.decode);
    j["results"].push_back(r);
  }
  double ref_median = -1.0;
  if (!reference.empty()) {
    std::vector<double> reported, wall;
    for (const auto& r : reference) {
      wall.push_back(r.wall_seconds);
      if (r.reported >= 0) reported.push_back(r.reported);
    }
    j["reference"] = {{"command", a.reference_cmd}, {"wall_seconds", wall}};
    if (!reported.empty()) {
      ref_median = median(reported);
      j["reference"]["tokens_per_second_runs"] = reported;
      j["reference"]["tokens_per_second"] = ref_median;
      j["reference"]["phase"] = phase;
      for (const auto& [runtime, tps] : compared)
        j["reference"]["full_width_" + phase + "_ratio_" + runtime] = tps / ref_median;
    }
  }
  if (fast)
    j["memory"] = {{"peak_rss_bytes_while_generating", peak},
                   {"process_baseline_bytes", baseline},
                   {"weights_bytes", weights},
                   {"kv_cache_bytes", kv_bytes},
                   {"engine_scratch_bytes", engine->scratch_bytes()},
                   {"other_bytes", peak - baseline - weights - kv_bytes}};
  if (!a.json_out.empty()) {
    std::ofstream out(a.json_out);
    out << j.dump(2) << "\n";
    if (!out) fail("--json-out", "cannot write " + a.json_out);
  }
  if (a.json) {
    std::cout << j.dump(2) << "\n";
    return;
  }

  std::printf(
      "%s: %lld parameters, %d threads, OpenBLAS %s kernels, pp%lld tg%lld, median of %lld (%s "
      "budgets)\n",
      a.model.c_str(), static_cast<long long>(parameters), threads, runtime::blas_core().c_str(),
      static_cast<long long>(a.prompt_tokens), static_cast<long long>(a.gen_tokens),
      static_cast<long long>(a.repeat), a.router.c_str());
  std::printf("%-9s %6s  %-44s %11s %11s %9s %9s %9s\n", "runtime", "budget", "architecture",
              "pp tok/s", "tg tok/s", "ms/token", "vs full", "ppl");
  for (const auto& r : j["results"]) {
    std::printf("%-9s %6.2f  %-44s %11.1f %11.1f %9.3f %9s %9s\n",
                r["runtime"].get<std::string>().c_str(), r["budget"].get<double>(),
                r["architecture_summary"].get<std::string>().substr(0, 44).c_str(),
                r["prefill_tokens_per_second"].get<double>(),
                r["decode_tokens_per_second"].get<double>(), r["decode_ms_per_token"].get<double>(),
                r.contains("decode_time_vs_full")
                    ? std::to_string(r["decode_time_vs_full"].get<double>()).substr(0, 5).c_str()
                    : "-",
                r.contains("perplexity")
                    ? std::to_string(r["perplexity"].get<double>()).substr(0, 7).c_str()
                    : "-");
  }
  if (!reference.empty()) {
    std::printf("reference: %s\n", a.reference_cmd.c_str());
    if (ref_median >= 0) {
      std::printf("  its tokens/s: %.1f (median of %zu)\n", ref_median, reference.size());
      for (const auto& [runtime, tps] : compared)
        std::printf("  %s runtime at full width / reference, %s tok/s: %.2fx\n", runtime.c_str(),
                    phase.c_str(), tps / ref_median);
    } else {
      std::printf("  (its output did not match --reference-regex)\n");
    }
  }
  if (fast)
    std::printf(
        "peak RSS while generating: %.1f MiB = process before loading %.1f + weights %.1f + KV "
        "caches %.1f + other %.1f (engine scratch %.1f)\n",
        mib(peak), mib(baseline), mib(weights), mib(kv_bytes),
        mib(peak - baseline - weights - kv_bytes), mib(engine->scratch_bytes()));
}

}  // namespace

void register_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Prefill and decode tokens/s per budget (llama-bench)");
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--budgets", a->budgets, "Comma-separated budgets in (0, 1]")
      ->capture_default_str();
  cmd->add_option("--router", a->router,
                  "uniform: every layer at that fraction of its widths; static: the model's static "
                  "router at that latency budget")
      ->check(CLI::IsMember({"uniform", "static"}))
      ->capture_default_str();
  cmd->add_option("--prompt-tokens", a->prompt_tokens,
                  "Tokens prefilled in one batched pass (default: 128, or half the model's "
                  "context if shorter)")
      ->check(positive());
  cmd->add_option("--gen-tokens", a->gen_tokens,
                  "Greedy decode steps (default: 128, or what the context leaves)")
      ->check(positive());
  cmd->add_option("--repeat", a->repeat, "Runs per figure (median)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--runtime", a->runtime, "fast, torch, or both side by side")
      ->check(CLI::IsMember({"fast", "torch", "both"}))
      ->capture_default_str();
  cmd->add_option("--reference-cmd", a->reference_cmd,
                  "A reference engine's command line, run through the shell once per round");
  cmd->add_option("--reference-regex", a->reference_regex,
                  "Where the reference prints its tokens/s (first group)")
      ->capture_default_str();
  cmd->add_option("--reference-phase", a->reference_phase,
                  "What the reference's tokens/s measures: decode, prefill, or auto (prefill "
                  "when --gen-tokens is 1)")
      ->check(CLI::IsMember({"auto", "decode", "prefill"}))
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU threads (0 = LibTorch default)")
      ->check(non_negative());
  cmd->add_flag("--json", a->json, "Print JSON instead of the table");
  cmd->add_option("--json-out", a->json_out, "Also write the JSON to this file");
  cmd->add_option("--quant", a->quant,
                  "Comma-separated weight formats of the fast runtime (f32, q8_0, q4_0), one "
                  "row per format and budget")
      ->capture_default_str();
  cmd->add_option("--ppl-data", a->ppl_data,
                  "A text whose perplexity each fast row reports (windows of 256 tokens)");
  cmd->add_option("--ppl-tokens", a->ppl_tokens, "Tokens of --ppl-data scored")
      ->check(positive())
      ->capture_default_str();
  a->speculative.add_to(cmd);
  cmd->add_option("--prompts", a->prompts,
                  "--speculative: a file of prompts, one a line (default: eight story openings)");
  cmd->add_option("--temperature", a->sampling.temperature,
                  "--speculative: sampling temperature (0 = greedy, whose texts are also compared)")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--seed", a->sampling.seed, "--speculative: sampling seed")
      ->capture_default_str();
  cmd->callback([a] {
    if (!a->speculative.on) return run_bench(*a);
    SpeculativeBenchArgs s;
    s.model = a->model;
    s.speculative = a->speculative;
    s.prompts = a->prompts;
    s.tokens = a->gen_tokens > 0 ? a->gen_tokens : 256;
    s.repeat = a->repeat;
    s.sampling = a->sampling;
    s.threads = a->threads;
    s.quant = a->quant;
    s.json = a->json;
    s.json_out = a->json_out;
    run_speculative_bench(s);
  });
}

}  // namespace flextron::cli
