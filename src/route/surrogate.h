// The surrogate model (FLEXTRON.md section 5): a small MLP that predicts the LLM's held-out
// language-model loss from the router's choices (the one-hot or straight-through vector of
// route/choices.h). Router training optimises against it instead of the LLM, so it needs no
// forward or backward pass of the LLM per step; it is fitted on (architecture, measured loss)
// pairs and refitted whenever its predictions for the router's current choices drift.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "route/choices.h"

namespace flextron::route {

struct LossSample {
  model::Architecture arch;
  double loss = 0.0;
};

class SurrogateImpl : public torch::nn::Module {
 public:
  SurrogateImpl(int64_t inputs, int64_t hidden);
  // choices: [N, inputs] -> predicted loss [N] (in nats).
  torch::Tensor forward(const torch::Tensor& choices);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, out{nullptr};
  // Targets are standardised for fitting; these undo it. Buffers, so they are saved with it.
  torch::Tensor loss_mean, loss_scale;
};
TORCH_MODULE(Surrogate);

struct SurrogateFitOptions {
  int64_t epochs = 1500;  // full-batch Adam steps
  double lr = 3e-3;
  double weight_decay = 1e-4;
};

// Fits (or continues fitting) on `samples`; returns the root-mean-square error on them (nats).
double fit_surrogate(SurrogateImpl& surrogate, const ChoiceLayout& layout,
                     const std::vector<LossSample>& samples, const SurrogateFitOptions& options);

// Predicted losses of `archs` (no gradient).
std::vector<double> predict_losses(SurrogateImpl& surrogate, const ChoiceLayout& layout,
                                   const std::vector<model::Architecture>& archs);

// Architectures spread over the whole size range: each draws a level u ~ U(0, 1) and every layer
// picks the choice nearest u * (choices - 1) plus Gaussian noise of one choice. (Independent
// uniform choices per layer concentrate every architecture near half size.)
std::vector<model::Architecture> sample_spread_architectures(const model::ElasticSpace& space,
                                                             int64_t count, uint64_t seed);

// Spearman's rank correlation of two equally long series (ties get their mean rank).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace flextron::route
