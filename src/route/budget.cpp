#include "route/budget.h"

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "model/extract.h"

namespace flextron::route {

BudgetKind parse_budget_kind(const std::string& name) {
  if (name == "latency") return BudgetKind::Latency;
  if (name == "ms") return BudgetKind::Milliseconds;
  if (name == "params") return BudgetKind::Params;
  if (name == "memory") return BudgetKind::Memory;
  fail("--budget-kind", "unknown kind \"" + name + "\" (use latency, ms, params or memory)");
}

std::string budget_kind_name(BudgetKind kind) {
  switch (kind) {
    case BudgetKind::Latency:
      return "latency";
    case BudgetKind::Milliseconds:
      return "ms";
    case BudgetKind::Params:
      return "params";
    case BudgetKind::Memory:
      return "memory";
  }
  return "latency";
}

bool is_fraction(BudgetKind kind) {
  return kind == BudgetKind::Latency || kind == BudgetKind::Params;
}

void check_budget(const Budget& budget, const std::string& where) {
  const std::string kind = budget_kind_name(budget.kind);
  if (!std::isfinite(budget.value))
    fail(where, "budget must be a finite number, got " + std::to_string(budget.value));
  if (budget.value <= 0.0)
    fail(where, kind + " budget must be > 0, got " + std::to_string(budget.value));
  if (is_fraction(budget.kind) && budget.value > 1.0)
    fail(where, kind + " budget is a fraction of the full model and must be <= 1, got " +
                    std::to_string(budget.value));
}

double architecture_cost(BudgetKind kind, const model::ModelConfig& config,
                         const model::Architecture& arch, const LatencyTable* table,
                         torch::Dtype dtype) {
  switch (kind) {
    case BudgetKind::Latency:
    case BudgetKind::Milliseconds: {
      if (table == nullptr)
        fail("budget", "a " + budget_kind_name(kind) +
                           " budget needs the model's latency.json (run flextron profile)");
      const double ms = table->decode_ms(arch);
      return kind == BudgetKind::Milliseconds ? ms : ms / table->decode_ms({});
    }
    case BudgetKind::Params:
      return static_cast<double>(model::subnetwork_parameter_count(config, arch)) /
             static_cast<double>(model::subnetwork_parameter_count(config, {}));
    case BudgetKind::Memory: {
      const model::Architecture widths = arch.empty() ? model::full_architecture(config) : arch;
      int64_t kv = 0;
      for (const auto& w : widths) kv += 2 * w.kv_groups * config.head_dim();
      const double elements = static_cast<double>(model::subnetwork_parameter_count(config, arch)) +
                              static_cast<double>(kv * config.max_position_embeddings);
      return elements * static_cast<double>(torch::elementSize(dtype)) / (1024.0 * 1024.0);
    }
  }
  return 0.0;
}

std::string describe_budget(const Budget& budget) {
  char buf[64];
  switch (budget.kind) {
    case BudgetKind::Milliseconds:
      std::snprintf(buf, sizeof buf, "%.3f ms/token", budget.value);
      break;
    case BudgetKind::Memory:
      std::snprintf(buf, sizeof buf, "%.1f MiB", budget.value);
      break;
    default:
      std::snprintf(buf, sizeof buf, "%s %.3f", budget_kind_name(budget.kind).c_str(),
                    budget.value);
  }
  return buf;
}

}  // namespace flextron::route
