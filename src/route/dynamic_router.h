// The dynamic (input-adaptive) router (FLEXTRON.md section 5). Per layer, a small MLP reads the
// token's hidden state entering the layer (layer-normalised, without gradient into the LLM) and
// the budget code, and picks that token's MLP width: a mixture of nested experts, each expert a
// prefix of the same neurons. Attention widths are chosen per sequence at prefill, from the
// prompt's mean hidden state, and kept for its decode steps so the KV cache stays consistent.
//
// Its logits are base logits for the budget (the static router's architecture for it, one-hot
// times kBaseLogit) plus a learned correction whose last layer starts at zero: an untrained
// dynamic router routes exactly like the static one, and training teaches it where to spend
// width token by token. The expected latency of its choices (the table's
// milliseconds, averaged over tokens) accumulates as the forward runs, for the latency loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "model/transformer.h"
#include "route/choices.h"

namespace flextron::route {

inline constexpr double kBaseLogit = 2.0;

// [choices]: kBaseLogit at `arch`'s choices, 0 elsewhere.
torch::Tensor base_logits(const ChoiceLayout& layout, const model::Architecture& arch);

class DynamicRouterImpl : public torch::nn::Module, public model::LayerRouter {
 public:
  DynamicRouterImpl(const ChoiceLayout& layout, int64_t hidden_size, int64_t budget_dims,
                    int64_t hidden = 64);

  // The budget for the following forwards: its code [K] and the base logits [choices] for it.
  void set_budget(const torch::Tensor& code, const torch::Tensor& base);
  // Training draws straight-through Gumbel-softmax choices at temperature tau; otherwise argmax.
  void set_sampling(bool sample, double tau);
  // The latency table's reference milliseconds per choice ([choices], route/choices.h).
  void set_costs(const torch::Tensor& cost_ms);

  model::LayerDecision route(int64_t layer, const torch::Tensor& hidden, bool prefill) override;
  // At inference (not sampling), once set_budget and set_costs have been called: the MLP choice
  // as route() makes it, in plain loops over host copies of the nets (made on first use after
  // set_budget), with the same usage accounting.
  bool routes_on_host() const override;
  int64_t host_mlp_width(int64_t layer, const float* hidden) override;

  // Since the last reset: expected milliseconds of the chosen layer widths per token (summed over
  // layers, averaged over tokens; differentiable while sampling), and the mean MLP width chosen
  // per layer.
  void reset_usage();
  torch::Tensor usage_ms() const;
  std::vector<double> mean_mlp_widths() const;
  // Forwards routed since the last reset.
  int64_t forwards() const { return forwards_; }

  torch::nn::ModuleList mlp_nets, attn_nets;

 private:
  ChoiceLayout layout_;
  torch::Tensor code_, static_logits_, cost_;
  bool sample_ = false;
  double tau_ = 1.0;
  std::vector<int64_t> attn_choice_;  // per layer, fixed at prefill
  void add_usage(const torch::Tensor& ms);
  std::vector<double> cost_values_;  // cost_ on the host, for inference
  // host_mlp_width's copies, per layer: the correction net's two linear layers and the static
  // logits of the layer's MLP segment; the budget code. Empty until first use after set_budget.
  struct HostNet {
    std::vector<float> w1, b1, w2, b2, base;  // w1 [hidden, inputs], w2 [choices, hidden]
    int64_t inputs = 0, hidden = 0, choices = 0;
  };
  std::vector<HostNet> host_nets_;
  std::vector<float> host_code_, host_inputs_, host_hidden_;
  void prepare_host();
  torch::Tensor usage_;       // while sampling (differentiable)
  double usage_value_ = 0.0;  // at inference
  std::vector<double> width_sum_;
  std::vector<int64_t> width_count_;
  int64_t forwards_ = 0;
};
TORCH_MODULE(DynamicRouter);

}  // namespace flextron::route
