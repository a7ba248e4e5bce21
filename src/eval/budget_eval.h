// flextron eval: one elastic model measured at every budget and router kind, beside baselines
// (other model directories, each at its full width), on the same axes:
//   - measured decode milliseconds per token (median of repeated single-token steps, averaged
//     over the latency table's contexts; every row measured once per round, rounds interleaved,
//     median over rounds), as a fraction of the full model measured in the same run, and
//     tokens per second;
//   - parameters used (for the dynamic router: the mean active parameters per token);
//   - perplexity and bits per byte on a held-out text (eval/perplexity.h);
//   - multiple-choice acc and acc_norm on JSONL tasks (eval/multiple_choice.h).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "route/select.h"

namespace flextron::eval {

struct BudgetEvalOptions {
  std::filesystem::path model;  // elastic model directory with latency.json and routers
  std::vector<double> budgets{0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};  // latency fractions
  std::vector<route::RouterKind> kinds{route::RouterKind::Uniform, route::RouterKind::Static,
                                       route::RouterKind::Dynamic};
  // Quality targets ("ppl+2%", ...): a static-router row each, whose measured perplexity is set
  // against the target (relative forms against the full model's measured perplexity).
  std::vector<std::string> quality_targets;
  std::filesystem::path ppl;  // held-out text; empty: no perplexity
  int64_t ppl_ctx = 256;
  int64_t ppl_max_tokens = 0;  // 0: the whole file
  std::vector<std::filesystem::path> tasks;
  int64_t task_limit = 0;  // examples per task; 0: all
  std::string delimiter = " ";
  int64_t latency_warmup = 3;
  int64_t latency_repeats = 10;  // decode steps per measurement (their median)
  int64_t latency_rounds = 5;    // interleaved measurements per row (their median)
  // The runtime each row's latency is measured on, as generate and serve choose it: auto (the
  // fast runtime where it runs the row: no dynamic router), fast or torch.
  std::string runtime = "auto";
  // The fast runtime's weight format for the latency column (f32, q8_0, q4_0).
  std::string quant = "auto";  // auto: the directory's own (io::LoadedModel::stored_weights)
  std::vector<std::pair<std::string, std::filesystem::path>> baselines;  // (label, directory)
};

// Returns the report: {"model", "settings", "rows": [...]}: the full model, one row per
// (kind, budget) (none without budgets: a plain model is measured at full width), then one per
// baseline. Everything is checked before the first measurement:
// budgets below the smallest architecture, kinds the model has no router for, unreadable task
// files and baselines are errors naming the option or file.
nlohmann::json evaluate_budgets(const BudgetEvalOptions& options);

}  // namespace flextron::eval
