#include "route/router_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <torch/torch.h>

#include "core/error.h"
#include "core/parse.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "route/budget_table.h"
#include "route/routed_training.h"
#include "route/router_file.h"
#include "runtime/threads.h"
#include "train/trainer.h"

namespace flextron::route {

namespace fs = std::filesystem;

std::vector<double> parse_budget_list(const std::string& text, const std::string& where) {
  auto out = parse_double_list(text, where);
  for (double v : out) check_budget({v, BudgetKind::Latency}, where);
  if (out.empty()) fail(where, "no budgets given");
  std::sort(out.begin(), out.end());
  if (std::adjacent_find(out.begin(), out.end()) != out.end())
    fail(where, "budgets must be distinct");
  return out;
}

double smallest_latency_fraction(const LatencyTable& table) {
  model::Architecture narrowest;
  for (size_t l = 0; l < table.mlp_widths.size(); ++l)
    narrowest.push_back({table.mlp_widths[l].front(), table.kv_groups[l].front()});
  return latency_fraction(table, narrowest);
}

std::vector<double> feasible_budget_grid(const LatencyTable& table, int count) {
  const double low = std::min(1.0, std::ceil(smallest_latency_fraction(table) * 100.0) / 100.0);
  std::vector<double> out;
  for (int i = 0; i < count; ++i) {
    const double b = low + (1.0 - low) * i / std::max(1, count - 1);
    const double rounded = std::round(b * 100.0) / 100.0;
    if (out.empty() || rounded > out.back()) out.push_back(rounded);
  }
  return out;
}

nlohmann::json train_routers(const RouterPipelineOptions& o) {
  const auto started = std::chrono::steady_clock::now();
  runtime::use_threads(o.threads);
  if (o.out.empty()) fail("--out", "an output directory is required");
  if (fs::exists(o.out) && fs::equivalent(o.out, o.model))
    fail("--out", "must differ from --model (the model directory is read, not modified)");
  if (o.seq_len < 2 || o.batch < 1 || o.eval_windows < 1)
    fail("train-router", "seq-len must be >= 2, batch and eval-windows >= 1");
  if (o.joint && o.joint_tokens <= 0) fail("--tokens", "--joint needs a token budget > 0");
  auto loaded = io::load_model_dir(o.model);
  if (!loaded.tokenizer) fail(o.model.string(), "no tokenizer in this model directory");
  auto& model = *loaded.model;
  const auto& config = model.config();
  if (o.seq_len > config.max_position_embeddings)
    fail("--seq-len", std::to_string(o.seq_len) + " exceeds the model's context of " +
                          std::to_string(config.max_position_embeddings));
  if (!loaded.space.ranked)
    std::fprintf(stderr, "warning: %s is not ranked by importance (run flextron rank first)\n",
                 o.model.c_str());
  const fs::path latency_file = o.latency.empty() ? o.model / kLatencyFile : o.latency;
  if (!fs::exists(latency_file))
    fail(latency_file.string(), "missing: run flextron profile --model " + o.model.string());
  const auto table = load_latency_table(latency_file, config, loaded.space);
  if (!o.reuse) {
    const double smallest = latency_fraction(table, model::narrowest_architecture(loaded.space));
    if (o.budgets.front() < smallest)
      fail("--budgets", "budget " + std::to_string(o.budgets.front()) +
                            " is below the smallest achievable latency fraction " +
                            std::to_string(smallest));
  }
  fs::create_directories(o.out);
  const auto data = train::load_training_data(o.data, o.val, *loaded.tokenizer,
                                              o.model / loaded.tokenizer->file_name(),
                                              o.out / "cache", o.seq_len, o.eval_windows, o.seed);
  auto say = [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
  };

  // 1-2. Surrogate and static router, the LLM only measured (never trained) here.
  auto bundle = o.reuse ? load_routers(o.model, config, loaded.space)
                        : make_routers(config, loaded.space, o.budgets, o.dynamic);
  if (o.reuse && o.dynamic && !bundle.dynamic)
    fail((o.model / kRouterFile).string(), "has no dynamic router to reuse (train it first)");
  const auto& layout = *bundle.layout;
  const auto budgets = bundle.router->budgets();
  int64_t measured = 0;
  LossOracle oracle = [&](const std::vector<model::Architecture>& archs) {
    std::vector<double> losses;
    for (const auto& a : archs)
      losses.push_back(train::validation_loss(model, data.val_source(), data.val_windows, o.seq_len,
                                              o.batch, a));
    measured += static_cast<int64_t>(archs.size());
    return losses;
  };
  nlohmann::json report = bundle.report;
  if (!o.reuse) {
    StaticRouterTrainOptions so;
    so.steps = o.router_steps;
    so.surrogate_samples = o.surrogate_samples;
    so.latency_weight = o.latency_weight;
    so.seed = o.seed;
    const auto static_report =
        train_static_router(*bundle.router, *bundle.surrogate, layout, table, oracle, so, say);
    report = {{"surrogate_heldout_spearman", static_report.surrogate_heldout_spearman},
              {"surrogate_heldout_rmse", static_report.surrogate_heldout_rmse},
              {"surrogate_samples", static_report.surrogate_samples},
              {"surrogate_refits", static_report.refits},
              {"architectures_measured", measured},
              {"static_log", static_report.log}};
  }

  // 3-4. Through the LLM: dynamic router (LLM frozen), then the joint fine-tune.
  bundle.router->to(model.device());
  if (bundle.dynamic) bundle.dynamic->to(model.device());
  train::TokenDataset const& train_data = *data.train;
  BatchSource batches = [&](int64_t step) {
    auto b =
        train::sample_batch(train_data, data.split.train, o.batch, o.seq_len, o.seed + 7, step);
    return std::make_pair(b.inputs, b.targets);
  };
  if (!o.reuse)
    bundle.table =
        build_budget_table(*bundle.router, *bundle.surrogate, layout, table, config, model.dtype());
  BaseArchitecture base_arch = [&](double budget) {
    return lookup_budget(bundle.table, {budget, BudgetKind::Latency}).arch;
  };
  if (bundle.dynamic && !o.reuse) {
    RoutedTrainOptions ro;
    ro.steps = o.dynamic_steps;
    ro.latency_weight = o.latency_weight;
    ro.seed = o.seed;
    report["dynamic"] = train_routed(model, *bundle.router, bundle.dynamic.get(), base_arch, layout,
                                     table, batches, ro, say);
  }
  if (o.joint) {
    RoutedTrainOptions ro;
    ro.steps = std::max<int64_t>(1, o.joint_tokens / (o.batch * o.seq_len));
    ro.train_model = true;
    ro.train_static = true;
    ro.latency_weight = o.latency_weight;
    ro.seed = o.seed + 1;
    report["joint"] =
        train_routed(model, *bundle.router, bundle.dynamic ? bundle.dynamic.get() : nullptr,
                     base_arch, layout, table, batches, ro, say);
    report["joint"]["tokens"] = ro.steps * o.batch * o.seq_len;
  }

  // 5. The budget table (again, if the joint fine-tune moved the static router), and the output.
  bundle.router->to(torch::kCPU);
  if (bundle.dynamic) bundle.dynamic->to(torch::kCPU);
  if (o.joint)
    bundle.table =
        build_budget_table(*bundle.router, *bundle.surrogate, layout, table, config, model.dtype());
  report["budgets"] = budgets;
  report["seconds"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  bundle.report = report;
  io::save_model_dir(o.out, model, loaded.tokenizer.get(), &loaded.space);
  save_latency_table(o.out / kLatencyFile, table);
  if (fs::exists(o.model / "training.json") && !fs::exists(o.out / "training.json"))
    fs::copy_file(o.model / "training.json", o.out / "training.json");
  save_routers(o.out, bundle);

  std::printf("%-8s %-10s %-9s %-8s %-8s  %s\n", "budget", "latency", "ms/token", "params",
              "SM loss", "architecture");
  for (double b : budgets) {
    const auto& e = lookup_budget(bundle.table, {b, BudgetKind::Latency});
    std::printf("%-8.2f %-10.3f %-9.3f %-8.3f %-8.4f  %s\n", b, e.latency_fraction, e.decode_ms,
                e.params_fraction, e.predicted_loss,
                model::describe_architecture(e.arch, config).c_str());
  }
  std::printf("surrogate: held-out rank correlation %.3f; routers written to %s\n",
              report.value("surrogate_heldout_spearman", 0.0), o.out.c_str());
  return report;
}

}  // namespace flextron::route
