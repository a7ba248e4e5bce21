// Which sequences decode together in a step, and what each is charged: weighted processor
// sharing across budgets (serve/engine.h). No model, no clock: plain numbers, so the rule is
// tested by simulating it.
//
// Every running sequence carries a charge (the engine seconds it has used) and a weight (what
// one decode step of it costs, relative to the full model: the weights it reads per token,
// decode_weight). A step costs the engine about tau * (sum of its rows' weights) seconds; each
// row is charged its weight's share of the step. The step serves the least-charged sequence
// (`first`) and every candidate that would not get ahead of it: a row no costlier than first
// always rides along (it only helps to share the weights), a costlier one joins unless its
// charge after the step would pass first's by more than one full-model step,
//   charge_j + tau w_j <= charge_first + tau (w_first + w_max).
// Charges then stay within a step of each other, so every request gets an equal share of the
// engine's time and a budget of half the cost gets twice the tokens per second.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/transformer.h"

namespace flextron::serve {

struct ScheduleCandidate {
  double charge = 0.0;  // engine seconds used so far
  double weight = 1.0;  // cost of one decode step relative to the full model's (> 0)
};

// The candidates (first is candidates[0], the least charged) that decode in this step, in
// candidates' order, at most max_rows. tau: seconds per unit of weight of a step (0 before any
// step was timed: every candidate joins).
std::vector<size_t> select_step_rows(const std::vector<ScheduleCandidate>& candidates, double tau,
                                     int64_t max_rows);

// Each row's share of a step that took `seconds`, in proportion to its weight.
std::vector<double> step_shares(const std::vector<double>& weights, double seconds);

// The weights one decode step of `arch` reads (attention and MLP of every layer, the LM head)
// as a fraction of the full model's: a row's weight in a batch across budgets.
double decode_weight(const model::ModelConfig& config, const model::Architecture& arch);

}  // namespace flextron::serve
