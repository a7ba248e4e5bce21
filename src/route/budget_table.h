// From a budget to an architecture at serving time. The static router's choice for every budget
// on a fine grid is computed once (build_budget_table) and stored in the model directory, so
// answering a request is a look-up. The uniform baseline (the same widths in every layer) is
// chosen here too, so every budget-taking command can compare the two.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "route/budget.h"
#include "route/choices.h"
#include "route/static_router.h"
#include "route/surrogate.h"

namespace flextron::route {

struct BudgetEntry {
  double budget = 1.0;  // the latency fraction this entry was chosen for
  model::Architecture arch;
  double latency_fraction = 1.0;  // the table's prediction, <= budget
  double decode_ms = 0.0;
  double params_fraction = 1.0;
  double memory_mib = 0.0;
  double predicted_loss = 0.0;  // the surrogate's

  // This entry's cost in `kind`'s unit.
  double cost(BudgetKind kind) const;
};

// The latency fraction of `arch` by the table (1.0 for the full model).
double latency_fraction(const LatencyTable& table, const model::Architecture& arch);

// The router's architecture for latency fraction `budget`: the argmax of its logits, then made to
// fit: while the table predicts more than the budget, narrow the layer choice that costs the
// least predicted loss per millisecond saved; then, while some widening still fits, take the one
// with the best predicted gain per millisecond (the budget is filled: in a nested network more
// width does not hurt, and the surrogate's small differences are within its error). Throws naming
// the smallest achievable fraction when even the narrowest architecture does not fit.
model::Architecture route_static(StaticRouterImpl& router, SurrogateImpl& surrogate,
                                 const ChoiceLayout& layout, const LatencyTable& table,
                                 double budget);

// Entries for the narrowest architecture and for budgets from there to 1 in steps of `step`.
std::vector<BudgetEntry> build_budget_table(StaticRouterImpl& router, SurrogateImpl& surrogate,
                                            const ChoiceLayout& layout, const LatencyTable& table,
                                            const model::ModelConfig& config, torch::Dtype dtype,
                                            double step = 0.01);

// The entry with the largest latency among those whose cost in budget.kind's unit is within the
// budget. Throws flextron::Error naming the smallest achievable budget when none fits.
// A quality budget is lookup_quality's.
const BudgetEntry& lookup_budget(const std::vector<BudgetEntry>& table, const Budget& budget);

// The entry of the largest latency: the full model (the table's budget 1.0).
const BudgetEntry& widest_entry(const std::vector<BudgetEntry>& table);

// The fastest entry whose predicted loss meets `target` relative to the widest entry's (the full
// model's) prediction; every entry counts as at least as lossy as the full model, so a target at
// the full model's own loss returns the full model. Throws flextron::Error naming the full
// model's predicted loss and perplexity for a target below it.
const BudgetEntry& lookup_quality(const std::vector<BudgetEntry>& table,
                                  const QualityTarget& target);

// The uniform baseline: the same widths in every layer, attention at the KV-group fraction
// nearest the MLP's ("mlp=f,attn=f"); the largest such architecture that fits the budget.
model::Architecture uniform_architecture(const ChoiceLayout& layout, const LatencyTable& table,
                                         const model::ModelConfig& config, torch::Dtype dtype,
                                         const Budget& budget);

BudgetEntry make_entry(double budget, const model::Architecture& arch, const LatencyTable& table,
                       const model::ModelConfig& config, torch::Dtype dtype, double predicted_loss);
nlohmann::json budget_entry_to_json(const BudgetEntry& e);
BudgetEntry budget_entry_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace flextron::route
