// Budgets (FLEXTRON.md sections 4 and 6): what a user asks for, and what an architecture costs
// in the same unit.
//  - latency: fraction of the full model's decode latency, predicted by the latency table (the
//    default, and what routers are trained on);
//  - ms: decode milliseconds per token on the profiled machine (the same table);
//  - params: fraction of the full model's parameters;
//  - memory: MiB of weights plus the KV cache of one sequence at the full context.
#pragma once

#include <string>

#include <torch/types.h>

#include "model/config.h"
#include "model/transformer.h"
#include "route/latency.h"

namespace flextron::route {

enum class BudgetKind { Latency, Milliseconds, Params, Memory };

struct Budget {
  double value = 1.0;
  BudgetKind kind = BudgetKind::Latency;
};

// "latency", "ms", "params" or "memory"; anything else is an error listing these.
BudgetKind parse_budget_kind(const std::string& name);
std::string budget_kind_name(BudgetKind kind);
bool is_fraction(BudgetKind kind);

// Throws flextron::Error naming `where` for NaN or infinite values, values <= 0, and fractions
// above 1.
void check_budget(const Budget& budget, const std::string& where);

// What `arch` costs in `kind`'s unit. Latency kinds need the table (an error says so without).
double architecture_cost(BudgetKind kind, const model::ModelConfig& config,
                         const model::Architecture& arch, const LatencyTable* table,
                         torch::Dtype dtype);

// "latency 0.60", "12.5 ms", ...: for messages.
std::string describe_budget(const Budget& budget);

}  // namespace flextron::route
