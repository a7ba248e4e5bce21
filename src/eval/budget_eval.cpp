#include "eval/budget_eval.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>

#include <torch/torch.h>

#include "core/error.h"
#include "core/progress_line.h"
#include "core/timing.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "io/model_dir.h"
#include "model/extract.h"
#include "route/latency.h"
#include "route/select.h"
#include "runtime/engine_timing.h"
#include "runtime/fast_generate.h"
#include "text/utf8.h"
#include "train/progress.h"

namespace flextron::eval {

namespace fs = std::filesystem;

namespace {

struct Task {
  std::string name;
  std::vector<ChoiceExample> examples;
};

// What one row runs: a model at an architecture, or routed.
struct Subject {
  std::string model_label;
  std::string kind;
  double budget = 0.0;  // 0: not a budget row
  std::optional<route::QualityTarget> target;
  model::TransformerImpl* model = nullptr;
  const text::Tokenizer* tokenizer = nullptr;
  std::optional<route::BudgetPlan> plan;
  model::Architecture arch;
  runtime::FastDecoder* engine = nullptr;  // set when its latency is measured on the fast runtime
};

// Parameters used per token. A dynamic router varies MLP widths per token: its mean width per
// layer, times the parameters of one MLP neuron, replaces the base architecture's width.
double parameters_used(const model::ModelConfig& config, const Subject& s) {
  const auto count = model::subnetwork_parameter_count(config, s.arch);
  if (!s.plan || !s.plan->dynamic || s.plan->dynamic->forwards() == 0)
    return static_cast<double>(count);
  const auto arch = s.arch.empty() ? model::full_architecture(config) : s.arch;
  const auto per_neuron = static_cast<double>(model::layer_mlp_parameters(config, 1) -
                                              model::layer_mlp_parameters(config, 0));
  const auto means = s.plan->dynamic->mean_mlp_widths();
  double n = static_cast<double>(count);
  for (size_t l = 0; l < arch.size() && l < means.size(); ++l)
    n += per_neuron * (means[l] - static_cast<double>(arch[l].mlp));
  return n;
}

}  // namespace

nlohmann::json evaluate_budgets(const BudgetEvalOptions& o) {
  if (o.ppl.empty() && o.tasks.empty())
    fail("eval", "nothing to measure quality with: give --ppl FILE and/or --tasks FILE.jsonl");
  auto loaded = io::load_model_dir(o.model);
  if (!loaded.tokenizer) fail(o.model.string(), "no tokenizer in this model directory");
  const auto& config = loaded.model->config();
  const auto format = runtime::qk::resolve_format(o.quant, loaded.stored_weights, "--quant");
  route::check_latency_weights(o.model, runtime::qk::format_name(format));

  // Inputs first, so that a bad file fails before minutes of measurement.
  std::string ppl_text;
  if (!o.ppl.empty()) ppl_text = text::read_utf8_file(o.ppl);
  std::vector<Task> tasks;
  for (const auto& file : o.tasks) {
    Task t{file.stem().string(), load_choice_task(file)};
    if (o.task_limit > 0 && static_cast<int64_t>(t.examples.size()) > o.task_limit)
      t.examples.resize(static_cast<size_t>(o.task_limit));
    tasks.push_back(std::move(t));
  }
  std::vector<io::LoadedModel> baselines;
  for (const auto& [label, dir] : o.baselines) {
    baselines.push_back(io::load_model_dir(dir));
    if (!baselines.back().tokenizer) fail(dir.string(), "no tokenizer in this baseline directory");
  }

  auto subject = [](std::string label, std::string kind, double budget, io::LoadedModel& m) {
    Subject s;
    s.model_label = std::move(label);
    s.kind = std::move(kind);
    s.budget = budget;
    s.model = m.model.get();
    s.tokenizer = m.tokenizer.get();
    return s;
  };
  // Rows of the evaluated model carry its directory's name, as baselines carry theirs.
  auto name = o.model.lexically_normal();
  if (name.filename().empty()) name = name.parent_path();
  const std::string label = name.filename().string();
  std::vector<Subject> subjects;
  subjects.push_back(subject(label, "full", 1.0, loaded));
  for (auto kind : o.kinds)
    for (double b : o.budgets) {
      auto s = subject(label, route::router_kind_name(kind), b, loaded);
      s.plan = route::plan_budget(o.model, *loaded.model, loaded.space,
                                  {b, route::BudgetKind::Latency}, kind);
      s.arch = s.plan->arch;
      subjects.push_back(std::move(s));
    }
  for (const auto& text : o.quality_targets) {
    auto s = subject(label, "quality", 0.0, loaded);
    route::Budget b;
    b.kind = route::BudgetKind::Quality;
    b.quality = route::parse_quality_target(text, "--quality-targets");
    s.target = b.quality;
    s.plan = route::plan_budget(o.model, *loaded.model, loaded.space, b, route::RouterKind::Static);
    s.arch = s.plan->arch;
    subjects.push_back(std::move(s));
  }
  for (size_t i = 0; i < baselines.size(); ++i)
    subjects.push_back(subject(o.baselines[i].first, "baseline", 0.0, baselines[i]));

  // Latency contexts: those of the model's table (what budgets are fractions of).
  std::vector<int64_t> contexts{128};
  if (fs::exists(o.model / route::kLatencyFile))
    contexts =
        route::load_latency_table(o.model / route::kLatencyFile, config, loaded.space).contexts;

  const auto started = std::chrono::steady_clock::now();
  auto eta = [&](size_t done, size_t total) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return train::format_duration(secs / static_cast<double>(done) *
                                  static_cast<double>(total - done));
  };
  const double full_params = static_cast<double>(model::subnetwork_parameter_count(config, {}));
  // Quality first: the dynamic router's usage then counts real text only. The held-out text is
  // encoded once per tokenizer (every row of the evaluated model shares one).
  std::map<const text::Tokenizer*, std::vector<int64_t>> ppl_tokens;
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < subjects.size(); ++i) {
    auto& s = subjects[i];
    auto& m = *s.model;
    const auto& cfg = m.config();
    model::LayerRouter* router = s.plan ? s.plan->router() : nullptr;
    if (s.plan && s.plan->dynamic) s.plan->dynamic->reset_usage();
    nlohmann::json row = {{"model", s.model_label},
                          {"router", s.kind},
                          {"architecture", model::describe_architecture(s.arch, cfg)}};
    if (s.budget > 0.0) row["budget"] = s.budget;
    if (s.plan) row["predicted_latency_fraction"] = s.plan->predicted_latency_fraction;
    if (s.plan && s.plan->predicted_loss > 0.0)
      row["predicted_perplexity"] = std::exp(s.plan->predicted_loss);
    if (s.target) {
      row["quality_target"] = s.target->text;
      row["target_perplexity_predicted_scale"] = std::exp(s.plan->target_loss);
    }
    if (!ppl_text.empty()) {
      auto& tokens = ppl_tokens[s.tokenizer];
      if (tokens.empty()) {
        tokens = s.tokenizer->encode(ppl_text, true);
        if (o.ppl_max_tokens > 0 && static_cast<int64_t>(tokens.size()) > o.ppl_max_tokens)
          tokens.resize(static_cast<size_t>(o.ppl_max_tokens));
      }
      PerplexityOptions po;
      po.ctx = std::min(o.ppl_ctx, cfg.max_position_embeddings);
      po.arch = s.arch;
      po.router = router;
      const auto r = perplexity(m, *s.tokenizer, tokens, po);
      row["perplexity"] = r.perplexity();
      row["bits_per_byte"] = r.bits_per_byte();
      row["tokens_scored"] = r.tokens_scored;
      if (s.target) {
        // Rows run in order, the full model's first: its measured loss is the reference of a
        // relative target, as its predicted loss is for choosing the row.
        const double full_loss = std::log(rows[0]["perplexity"].get<double>());
        const double allowed = route::quality_max_loss(*s.target, full_loss);
        row["measured_target_perplexity"] = std::exp(allowed);
        row["target_met"] = std::log(r.perplexity()) <= allowed + 1e-9;
        // How the prediction fared: the predicted and measured loss over the full model's.
        row["predicted_loss_increase"] = s.plan->predicted_loss - s.plan->full_predicted_loss;
        row["measured_loss_increase"] = std::log(r.perplexity()) - full_loss;
      }
    }
    row["tasks"] = nlohmann::json::object();
    std::string summary;
    for (const auto& t : tasks) {
      ChoiceOptions co;
      co.delimiter = o.delimiter;
      co.arch = s.arch;
      co.router = router;
      const auto r = evaluate_choices(m, *s.tokenizer, t.examples, co);
      row["tasks"][t.name] = r.to_json();
      summary += ", " + t.name + " acc_norm " + std::to_string(r.acc_norm).substr(0, 5);
    }
    const double params = parameters_used(cfg, s);
    row["params"] = params;
    row["params_fraction"] = params / full_params;
    if (s.plan && s.plan->dynamic) {
      const auto plan = s.plan->to_json(cfg);
      row["dynamic_mean_mlp_widths"] = plan.value("dynamic_mean_mlp_widths", nlohmann::json());
      row["predicted_latency_fraction"] =
          plan.value("dynamic_predicted_latency_fraction", s.plan->predicted_latency_fraction);
    }
    if (row.contains("perplexity"))
      summary = ", ppl " + std::to_string(row["perplexity"].get<double>()).substr(0, 7) + summary;
    std::fprintf(stderr, "[eval %zu/%zu] %s %s%s: params %.0f%%%s; ETA %s\n", i + 1,
                 subjects.size(), s.model_label.c_str(), s.kind.c_str(),
                 s.budget > 0.0 ? (" @" + std::to_string(s.budget).substr(0, 4)).c_str() : "",
                 100.0 * params / full_params, summary.c_str(),
                 eta(i + 1, subjects.size()).c_str());
    rows.push_back(row);
  }

  // Latency on the runtime that would serve each row: one fast engine per model (it shares the
  // model's weights; a dynamic router routes on it too), the torch forward where it cannot run.
  std::map<model::TransformerImpl*, std::unique_ptr<runtime::FastDecoder>> engines;
  for (size_t i = 0; i < subjects.size(); ++i) {
    auto& s = subjects[i];
    runtime::GenerateOptions as_served;
    as_served.router = s.plan ? s.plan->router() : nullptr;
    if (!runtime::use_fast_runtime(o.runtime, *s.model, as_served)) continue;
    auto& engine = engines[s.model];
    if (!engine) {
      runtime::EngineOptions eo;
      eo.format = format;
      engine = std::make_unique<runtime::FastDecoder>(*s.model, eo);
    }
    s.engine = engine.get();
  }
  for (size_t i = 0; i < subjects.size(); ++i)
    rows[i]["runtime"] = subjects[i].engine ? "fast" : "torch";
  for (size_t i = 0; i < subjects.size(); ++i)
    rows[i]["weights"] = subjects[i].engine ? runtime::qk::format_name(format) : "f32";
  // Every subject once per round, rounds interleaved so that drift in the machine's speed
  // reaches all alike; the median over rounds is kept.
  ProgressLine line;
  const auto ms = interleaved_medians(
      subjects.size(), o.latency_rounds,
      [&](size_t i) {
        auto& s = subjects[i];
        model::LayerRouter* router = s.plan ? s.plan->router() : nullptr;
        const int64_t max_context = s.model->config().max_position_embeddings - 1;
        double sum = 0.0;
        for (int64_t c : contexts)
          sum += s.engine ? runtime::engine_decode_ms(*s.engine, s.arch, std::min(c, max_context),
                                                      1, o.latency_warmup, o.latency_repeats,
                                                      router, s.model)
                          : route::measure_decode_ms(*s.model, s.arch, std::min(c, max_context), 1,
                                                     o.latency_warmup, o.latency_repeats, router);
        return sum / static_cast<double>(contexts.size());
      },
      [&](int64_t round) {
        line.updatef("[eval] latency round %lld/%lld", static_cast<long long>(round),
                     static_cast<long long>(o.latency_rounds));
      });
  line.finish();
  const double full_ms = ms[0];
  for (size_t i = 0; i < subjects.size(); ++i) {
    const double m = ms[i];
    rows[i]["decode_ms"] = m;
    rows[i]["latency_fraction"] = m / full_ms;
    rows[i]["tokens_per_second"] = 1000.0 / m;
  }

  nlohmann::json settings = {{"budgets", o.budgets},
                             {"quality_targets", o.quality_targets},
                             {"ppl", o.ppl.string()},
                             {"ppl_ctx", o.ppl_ctx},
                             {"ppl_max_tokens", o.ppl_max_tokens},
                             {"ppl_convention", "llama.cpp"},
                             {"latency_contexts", contexts},
                             {"latency_repeats", o.latency_repeats},
                             {"latency_rounds", o.latency_rounds},
                             {"runtime", o.runtime},
                             {"delimiter", o.delimiter}};
  nlohmann::json kinds = nlohmann::json::array();
  for (auto k : o.kinds) kinds.push_back(route::router_kind_name(k));
  settings["kinds"] = kinds;
  nlohmann::json task_list = nlohmann::json::array();
  for (size_t i = 0; i < tasks.size(); ++i)
    task_list.push_back({{"name", tasks[i].name},
                         {"file", o.tasks[i].string()},
                         {"examples", tasks[i].examples.size()}});
  settings["tasks"] = task_list;
  return {{"format", "flextron-eval"},
          {"model", o.model.string()},
          {"hardware", route::describe_hardware(*loaded.model)},
          {"settings", settings},
          {"full_decode_ms", full_ms},
          {"full_params", full_params},
          {"rows", rows}};
}

}  // namespace flextron::eval
