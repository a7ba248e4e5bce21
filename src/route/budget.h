// Budgets (FLEXTRON.md sections 4 and 6): what a user asks for, and what an architecture costs
// in the same unit.
//  - latency: fraction of the full model's decode latency, predicted by the latency table (the
//    default, and what routers are trained on);
//  - ms: decode milliseconds per token on the profiled machine (the same table);
//  - params: fraction of the full model's parameters;
//  - memory: MiB of weights plus the KV cache of one sequence at the full context;
//  - quality: a target on held-out loss ("ppl+2%", "loss+0.05", "ppl<=250"): the fastest
//    architecture whose loss the surrogate predicts within it (route/budget_table.h).
#pragma once

#include <string>

#include <torch/types.h>

#include "model/config.h"
#include "model/transformer.h"
#include "route/latency.h"

namespace flextron::route {

enum class BudgetKind { Latency, Milliseconds, Params, Memory, Quality };

// A quality target. Relative forms are relative to the full model's loss, absolute ones are the
// loss or perplexity itself (perplexity = exp(loss), loss in nats per token).
struct QualityTarget {
  enum class Form {
    PerplexityPercent,  // "ppl+2%":  ppl <= full ppl * (1 + 2/100)
    PerplexityDelta,    // "ppl+5":   ppl <= full ppl + 5
    LossDelta,          // "loss+0.05": loss <= full loss + 0.05
    Perplexity,         // "ppl<=250" or "ppl=250"
    Loss                // "loss<=5.5" or "loss=5.5"
  };
  Form form = Form::PerplexityPercent;
  double amount = 0.0;
  std::string text;  // as written, for messages and labels
};

struct Budget {
  double value = 1.0;  // unused for quality
  BudgetKind kind = BudgetKind::Latency;
  QualityTarget quality = {};  // kind == Quality
};

// Parses one of QualityTarget's forms; anything else (a negative or non-finite amount included)
// is a one-line error naming `where` and listing the forms.
QualityTarget parse_quality_target(const std::string& text, const std::string& where);
// Whether `text` is written as a quality target ("ppl...", "loss..."), so --budget "ppl+2%"
// needs no --budget-kind.
bool looks_like_quality_target(const std::string& text);
// The largest loss (nats) that meets `target` when the full model's loss is `full_loss`.
double quality_max_loss(const QualityTarget& target, double full_loss);

// "latency", "ms", "params", "memory" or "quality"; anything else is an error listing these.
BudgetKind parse_budget_kind(const std::string& name);
std::string budget_kind_name(BudgetKind kind);
bool is_fraction(BudgetKind kind);

// Throws flextron::Error naming `where` for NaN or infinite values, values <= 0, and fractions
// above 1.
void check_budget(const Budget& budget, const std::string& where);

// What `arch` costs in `kind`'s unit. Latency kinds need the table (an error says so without);
// quality needs the surrogate and is the budget table's (an error here).
double architecture_cost(BudgetKind kind, const model::ModelConfig& config,
                         const model::Architecture& arch, const LatencyTable* table,
                         torch::Dtype dtype);

// "latency 0.60", "12.5 ms", ...: for messages.
std::string describe_budget(const Budget& budget);

}  // namespace flextron::route
