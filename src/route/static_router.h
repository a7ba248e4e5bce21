// The static router (FLEXTRON.md section 5): budget -> per-layer width choices, one architecture
// per budget. Input: the budget one-hot over the trained budget grid, linearly interpolated
// between neighbours; a small MLP (Linear to 128, LeakyReLU, Linear to the choice layout of
// route/choices.h) gives every layer's choice logits.
//
// Training (train_static_router) needs no pass through the LLM: each step draws hard choices with
// the straight-through Gumbel-softmax at an annealed temperature and minimises
//   SM(choices) + lambda * max(0, latency(choices) / full_latency - budget) / budget
// where SM is the surrogate model and latency is the table's sum over the chosen entries. Every
// `check_every` steps the router's current architectures are measured on held-out data; if the
// SM is off by more than the tolerance there, those pairs join its training set and it is refitted.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "route/choices.h"
#include "route/latency.h"
#include "route/surrogate.h"

namespace flextron::route {

class StaticRouterImpl : public torch::nn::Module {
 public:
  // budgets: the trained grid (latency fractions, ascending, in (0, 1]).
  StaticRouterImpl(int64_t choices, std::vector<double> budgets, int64_t hidden = 128);
  // [N, K] codes of `budgets`: one-hot over the grid, linearly interpolated between neighbours,
  // clamped at the ends.
  torch::Tensor encode_budgets(const std::vector<double>& budgets) const;
  // codes [N, K] -> choice logits [N, choices].
  torch::Tensor forward(const torch::Tensor& codes);
  const std::vector<double>& budgets() const { return budgets_; }
  int64_t hidden() const { return hidden_; }

  torch::nn::Linear fc1{nullptr}, out{nullptr};

 private:
  std::vector<double> budgets_;
  int64_t hidden_;
};
TORCH_MODULE(StaticRouter);

// Held-out losses of architectures, measured on the LLM (the truth the SM approximates).
using LossOracle = std::function<std::vector<double>(const std::vector<model::Architecture>&)>;

struct StaticRouterTrainOptions {
  int64_t steps = 400;
  double lr = 3e-3;
  double latency_weight = 10.0;  // lambda
  double tau_start = 5.0;        // Gumbel-softmax temperature, annealed geometrically
  double tau_end = 0.2;
  int64_t surrogate_samples = 64;     // initial (architecture, loss) pairs
  double surrogate_holdout = 0.25;    // share of them kept out of the first fit to report on
  double surrogate_tolerance = 0.03;  // relative error on the router's choices that forces a refit
  int64_t check_every = 50;
  uint64_t seed = 1234;
  SurrogateFitOptions fit;
};

struct StaticRouterTrainReport {
  double surrogate_heldout_spearman = 0.0;  // on the held-out share of the initial pairs
  double surrogate_heldout_rmse = 0.0;
  int64_t surrogate_samples = 0;  // pairs it was fitted on in the end
  int64_t refits = 0;
  nlohmann::json log = nlohmann::json::array();  // per check: step, tau, losses, errors
};

StaticRouterTrainReport train_static_router(
    StaticRouterImpl& router, SurrogateImpl& surrogate, const ChoiceLayout& layout,
    const LatencyTable& table, const LossOracle& oracle, const StaticRouterTrainOptions& options,
    const std::function<void(const std::string&)>& log = {});

}  // namespace flextron::route
