// Training through the LLM with routers in the loop, on the true LM loss plus the latency loss
//   CE + lambda * (max(0, latency / full - budget) + 0.1 * max(0, budget - latency / full)) /
//   budget,
// one trained budget per step in turn. Two uses (FLEXTRON.md section 5):
//  - the dynamic router's training, with the LLM frozen (gradients reach the router through the
//    straight-through scales of each layer's output);
//  - the final joint fine-tune (--joint), where the LLM, the static router and the dynamic router
//    (if any) all learn, static and dynamic steps alternating.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "model/transformer.h"
#include "route/choices.h"
#include "route/dynamic_router.h"
#include "route/latency.h"
#include "route/static_router.h"

namespace flextron::route {

struct RoutedTrainOptions {
  int64_t steps = 200;
  double router_lr = 3e-3;
  double model_lr = 3e-5;  // joint fine-tune only
  double latency_weight = 10.0;
  double tau_start = 2.0;
  double tau_end = 0.2;
  bool train_model = false;
  bool train_static = false;
  uint64_t seed = 1234;
};

// One batch of (inputs, targets) [B, T] (int64) for step `step`.
using BatchSource = std::function<std::pair<torch::Tensor, torch::Tensor>(int64_t step)>;

// The static router's architecture for a budget (the dynamic router's starting point).
using BaseArchitecture = std::function<model::Architecture(double budget)>;

// dynamic may be null (then every step routes statically). Returns a summary (final losses,
// latency fractions) as JSON.
nlohmann::json train_routed(model::TransformerImpl& model, StaticRouterImpl& router,
                            DynamicRouterImpl* dynamic, const BaseArchitecture& base_arch,
                            const ChoiceLayout& layout, const LatencyTable& table,
                            const BatchSource& batches, const RoutedTrainOptions& options,
                            const std::function<void(const std::string&)>& log = {});

// Routes a forward pass with fixed per-layer choices ([choices] straight-through vector): the MLP
// at full width through the neuron mask of its choice (route/choices.h), attention at the chosen
// KV groups with its output scaled by the choice's entry (value 1, gradient to the router).
class StaticRouting : public model::LayerRouter {
 public:
  StaticRouting(const ChoiceLayout& layout, torch::Tensor choices);
  model::LayerDecision route(int64_t layer, const torch::Tensor& hidden, bool prefill) override;

 private:
  const ChoiceLayout& layout_;
  torch::Tensor choices_;
};

}  // namespace flextron::route
