#include "route/budget.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "model/extract.h"

namespace flextron::route {

BudgetKind parse_budget_kind(const std::string& name) {
  if (name == "latency") return BudgetKind::Latency;
  if (name == "ms") return BudgetKind::Milliseconds;
  if (name == "params") return BudgetKind::Params;
  if (name == "memory") return BudgetKind::Memory;
  if (name == "quality") return BudgetKind::Quality;
  fail("--budget-kind",
       "unknown kind \"" + name + "\" (use latency, ms, params, memory or quality)");
}

namespace {

const char* const kQualityForms =
    "use ppl+P% (perplexity within P percent of the full model's), ppl+X, loss+X (nats), "
    "ppl<=X or loss<=X";

}  // namespace

bool looks_like_quality_target(const std::string& text) {
  return text.rfind("ppl", 0) == 0 || text.rfind("loss", 0) == 0;
}

QualityTarget parse_quality_target(const std::string& text, const std::string& where) {
  QualityTarget t;
  t.text = text;
  std::string rest;
  bool ppl = false;
  if (text.rfind("ppl", 0) == 0) {
    ppl = true;
    rest = text.substr(3);
  } else if (text.rfind("loss", 0) == 0) {
    rest = text.substr(4);
  } else {
    fail(where, "quality target \"" + text + "\" is not one of its forms: " + kQualityForms);
  }
  bool relative = false, percent = false;
  if (rest.rfind("+", 0) == 0) {
    relative = true;
    rest = rest.substr(1);
  } else if (rest.rfind("<=", 0) == 0) {
    rest = rest.substr(2);
  } else if (rest.rfind("=", 0) == 0) {
    rest = rest.substr(1);
  } else {
    fail(where, "quality target \"" + text + "\" is not one of its forms: " + kQualityForms);
  }
  if (relative && ppl && !rest.empty() && rest.back() == '%') {
    percent = true;
    rest.pop_back();
  }
  // The whole rest must be a number: strtod's end pointer at the end, and finite.
  char* end = nullptr;
  const double amount = rest.empty() ? NAN : std::strtod(rest.c_str(), &end);
  if (rest.empty() || end != rest.c_str() + rest.size() || !std::isfinite(amount))
    fail(where, "quality target \"" + text + "\": \"" + rest + "\" is not a number; " +
                    kQualityForms);
  if (relative ? amount < 0.0 : amount <= 0.0)
    fail(where, "quality target \"" + text + "\": the amount must be " +
                    (relative ? "0 or more" : "positive"));
  if (!relative && ppl && amount < 1.0)
    fail(where, "quality target \"" + text + "\": a perplexity is at least 1");
  t.amount = amount;
  using F = QualityTarget::Form;
  t.form = relative ? (ppl ? (percent ? F::PerplexityPercent : F::PerplexityDelta) : F::LossDelta)
                    : (ppl ? F::Perplexity : F::Loss);
  return t;
}

double quality_max_loss(const QualityTarget& t, double full_loss) {
  using F = QualityTarget::Form;
  switch (t.form) {
    case F::PerplexityPercent:
      return full_loss + std::log1p(t.amount / 100.0);
    case F::PerplexityDelta:
      return std::log(std::exp(full_loss) + t.amount);
    case F::LossDelta:
      return full_loss + t.amount;
    case F::Perplexity:
      return std::log(t.amount);
    case F::Loss:
      return t.amount;
  }
  return full_loss;
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
    case BudgetKind::Quality:
      return "quality";
  }
  return "latency";
}

bool is_fraction(BudgetKind kind) {
  return kind == BudgetKind::Latency || kind == BudgetKind::Params;
}

void check_budget(const Budget& budget, const std::string& where) {
  if (budget.kind == BudgetKind::Quality) {
    parse_quality_target(budget.quality.text, where);  // the one place its rules live
    return;
  }
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
    case BudgetKind::Quality:
      fail("budget", "a quality target is met from the router's budget table (static router)");
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
    case BudgetKind::Quality:
      return "quality " + budget.quality.text;
    default:
      std::snprintf(buf, sizeof buf, "%s %.3f", budget_kind_name(budget.kind).c_str(),
                    budget.value);
  }
  return buf;
}

}  // namespace flextron::route
