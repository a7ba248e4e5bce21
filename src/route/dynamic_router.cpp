#include "route/dynamic_router.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

namespace {
torch::nn::Sequential correction_net(int64_t inputs, int64_t hidden, int64_t outputs) {
  torch::nn::Sequential net(
      torch::nn::Linear(inputs, hidden),
      torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.01)),
      torch::nn::Linear(hidden, outputs));
  // Zero last layer: the correction starts at nothing, so routing starts as the static router's.
  torch::NoGradGuard no_grad;
  auto last = net->ptr<torch::nn::LinearImpl>(2);
  last->weight.zero_();
  last->bias.zero_();
  return net;
}
}  // namespace

torch::Tensor base_logits(const ChoiceLayout& layout, const model::Architecture& arch) {
  return layout.encode(arch) * kBaseLogit;
}

DynamicRouterImpl::DynamicRouterImpl(const ChoiceLayout& layout, int64_t hidden_size,
                                     int64_t budget_dims, int64_t hidden)
    : layout_(layout) {
  mlp_nets = register_module("mlp", torch::nn::ModuleList());
  attn_nets = register_module("attn", torch::nn::ModuleList());
  for (int64_t l = 0; l < layout.layers(); ++l) {
    mlp_nets->push_back(
        correction_net(hidden_size + budget_dims, hidden, layout.mlp_segment(l).size));
    attn_nets->push_back(
        correction_net(hidden_size + budget_dims, hidden, layout.attn_segment(l).size));
  }
  attn_choice_.assign(static_cast<size_t>(layout.layers()), -1);
  reset_usage();
}

void DynamicRouterImpl::set_budget(const torch::Tensor& code, const torch::Tensor& base) {
  code_ = code.reshape({-1});
  static_logits_ = base.reshape({-1});
  host_nets_.clear();
}

void DynamicRouterImpl::set_sampling(bool sample, double tau) {
  sample_ = sample;
  tau_ = tau;
}

void DynamicRouterImpl::set_costs(const torch::Tensor& cost_ms) {
  cost_ = cost_ms.reshape({-1});
  auto cpu = cost_.to(torch::kCPU, torch::kDouble).contiguous();
  cost_values_.assign(cpu.data_ptr<double>(), cpu.data_ptr<double>() + cpu.numel());
}

void DynamicRouterImpl::add_usage(const torch::Tensor& ms) {
  usage_ = usage_.defined() ? usage_ + ms : ms;
}

void DynamicRouterImpl::reset_usage() {
  usage_ = torch::Tensor();
  usage_value_ = 0.0;
  width_sum_.assign(static_cast<size_t>(layout_.layers()), 0.0);
  width_count_.assign(static_cast<size_t>(layout_.layers()), 0);
  forwards_ = 0;
}

torch::Tensor DynamicRouterImpl::usage_ms() const {
  // Training accumulates a differentiable tensor; inference plain numbers (no per-token ops).
  return usage_.defined() ? usage_ : torch::tensor(usage_value_, torch::kDouble);
}

std::vector<double> DynamicRouterImpl::mean_mlp_widths() const {
  std::vector<double> out;
  for (size_t l = 0; l < width_sum_.size(); ++l)
    out.push_back(width_count_[l] ? width_sum_[l] / static_cast<double>(width_count_[l]) : 0.0);
  return out;
}

model::LayerDecision DynamicRouterImpl::route(int64_t layer, const torch::Tensor& hidden,
                                              bool prefill) {
  if (!code_.defined() || cost_values_.empty())
    fail("dynamic router", "set_budget and set_costs must be called before routing");
  const auto l = static_cast<size_t>(layer);
  const auto& space = layout_.space();
  if (layer == 0) ++forwards_;
  const int64_t batch = hidden.size(0), steps = hidden.size(1), dim = hidden.size(2);
  // The router sees the hidden state but does not shape it: no gradient into the LLM from here.
  auto features = torch::layer_norm(hidden.detach().to(torch::kFloat), {dim});
  const auto device = features.device();
  if (code_.device() != device) code_ = code_.to(device);
  if (static_logits_.device() != device) static_logits_ = static_logits_.to(device);
  if (cost_.device() != device) cost_ = cost_.to(device);
  model::LayerDecision decision;

  // Attention: per sequence at prefill (batched training shares one choice per batch).
  const Segment attn = layout_.attn_segment(layer);
  if (prefill || attn_choice_[l] < 0) {
    auto pooled = torch::cat({features.mean(1).mean(0), code_}, -1);
    auto logits = static_logits_.narrow(0, attn.offset, attn.size) +
                  attn_nets[l]->as<torch::nn::Sequential>()->forward(pooled);
    if (sample_) {
      auto y = gumbel_softmax_hard(logits, tau_, true);
      attn_choice_[l] = y.argmax().item<int64_t>();
      decision.attention_scale = y[attn_choice_[l]];
      add_usage((y * cost_.narrow(0, attn.offset, attn.size)).sum());
    } else {
      attn_choice_[l] = logits.argmax().item<int64_t>();
    }
  }
  if (!sample_) usage_value_ += cost_values_[static_cast<size_t>(attn.offset + attn_choice_[l])];
  decision.widths.kv_groups = space.kv_groups[l][static_cast<size_t>(attn_choice_[l])];

  // MLP: per token.
  const Segment mlp = layout_.mlp_segment(layer);
  auto inputs = torch::cat({features, code_.expand({batch, steps, code_.size(0)})}, -1);
  auto logits = static_logits_.narrow(0, mlp.offset, mlp.size) +
                mlp_nets[l]->as<torch::nn::Sequential>()->forward(inputs);
  if (sample_) {
    // Training: the full width with the straight-through neuron mask y @ inclusion, whose
    // gradient tells every choice what its neurons are worth (route/choices.h).
    auto y = gumbel_softmax_hard(logits, tau_, true);
    add_usage((y * cost_.narrow(0, mlp.offset, mlp.size)).sum(-1).mean());
    auto inclusion = inclusion_matrix(space.mlp[l]).to(device);
    decision.widths.mlp = inclusion.size(1);
    decision.mlp_mask = torch::matmul(y, inclusion).to(hidden.scalar_type());
    return decision;
  }
  // Inference: argmax per token. A decode step (one token) runs at exactly its width; a prefill
  // whose tokens differ runs the widest with a mask. Choices come back to the host once.
  auto chosen = logits.argmax(-1).reshape({-1}).to(torch::kCPU);
  const auto* c = chosen.data_ptr<int64_t>();
  int64_t widest = 0, narrowest = std::numeric_limits<int64_t>::max();
  double cost = 0.0;
  std::vector<int64_t> widths(static_cast<size_t>(chosen.numel()));
  for (size_t t = 0; t < widths.size(); ++t) {
    widths[t] = space.mlp[l][static_cast<size_t>(c[t])];
    widest = std::max(widest, widths[t]);
    narrowest = std::min(narrowest, widths[t]);
    cost += cost_values_[static_cast<size_t>(mlp.offset + c[t])];
    width_sum_[l] += static_cast<double>(widths[t]);
  }
  width_count_[l] += batch * steps;
  usage_value_ += cost / static_cast<double>(widths.size());
  decision.widths.mlp = widest;
  if (narrowest < widest) {
    auto per_token = torch::tensor(widths, torch::kLong).to(device).view({batch, steps, 1});
    auto neuron = torch::arange(widest, per_token.options()).view({1, 1, widest});
    decision.mlp_mask = (neuron < per_token).to(hidden.scalar_type());
  }
  return decision;
}

// ---------------------------------------------------------------------------------------------
// The host path of a decode step: the same maths as route()'s inference branch on one token,
// features = layer_norm(hidden) (no affine, eps 1e-5), logits = base + W2 leaky(W1 [f, code] + b1)
// + b2, and the first maximum (torch's argmax).

bool DynamicRouterImpl::routes_on_host() const {
  return !sample_ && code_.defined() && !cost_values_.empty();
}

void DynamicRouterImpl::prepare_host() {
  auto host = [](const torch::Tensor& t) {
    auto c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
    return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  };
  host_code_ = host(code_);
  const auto base = host(static_logits_);
  host_nets_.clear();
  for (int64_t l = 0; l < layout_.layers(); ++l) {
    auto net = mlp_nets[static_cast<size_t>(l)]->as<torch::nn::Sequential>();
    auto first = net->ptr<torch::nn::LinearImpl>(0), last = net->ptr<torch::nn::LinearImpl>(2);
    HostNet h;
    h.w1 = host(first->weight);
    h.b1 = host(first->bias);
    h.w2 = host(last->weight);
    h.b2 = host(last->bias);
    h.hidden = first->weight.size(0);
    h.inputs = first->weight.size(1);
    h.choices = last->weight.size(0);
    const Segment seg = layout_.mlp_segment(l);
    h.base.assign(base.begin() + seg.offset, base.begin() + seg.offset + seg.size);
    host_nets_.push_back(std::move(h));
  }
}

int64_t DynamicRouterImpl::host_mlp_width(int64_t layer, const float* hidden) {
  if (host_nets_.empty()) prepare_host();
  const auto l = static_cast<size_t>(layer);
  const HostNet& net = host_nets_[l];
  const int64_t dim = net.inputs - static_cast<int64_t>(host_code_.size());
  host_inputs_.resize(static_cast<size_t>(net.inputs));
  host_hidden_.resize(static_cast<size_t>(net.hidden));
  // Features: hidden normalised to zero mean and unit variance (biased), then the budget code.
  double mean = 0.0, var = 0.0;
  for (int64_t i = 0; i < dim; ++i) mean += hidden[i];
  mean /= static_cast<double>(dim);
  for (int64_t i = 0; i < dim; ++i) var += (hidden[i] - mean) * (hidden[i] - mean);
  var /= static_cast<double>(dim);
  const double inv = 1.0 / std::sqrt(var + 1e-5);
  for (int64_t i = 0; i < dim; ++i)
    host_inputs_[static_cast<size_t>(i)] = static_cast<float>((hidden[i] - mean) * inv);
  std::copy(host_code_.begin(), host_code_.end(), host_inputs_.begin() + dim);
  for (int64_t j = 0; j < net.hidden; ++j) {
    const float* w = net.w1.data() + j * net.inputs;
    float z = net.b1[static_cast<size_t>(j)];
    for (int64_t i = 0; i < net.inputs; ++i) z += w[i] * host_inputs_[static_cast<size_t>(i)];
    host_hidden_[static_cast<size_t>(j)] = z > 0.0f ? z : 0.01f * z;  // LeakyReLU(0.01)
  }
  int64_t best = 0;
  float best_logit = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < net.choices; ++c) {
    const float* w = net.w2.data() + c * net.hidden;
    float z = net.b2[static_cast<size_t>(c)] + net.base[static_cast<size_t>(c)];
    for (int64_t j = 0; j < net.hidden; ++j) z += w[j] * host_hidden_[static_cast<size_t>(j)];
    if (z > best_logit) best = c, best_logit = z;
  }
  // route()'s accounting for one token: this layer's attention (fixed at prefill) and MLP costs.
  const auto& space = layout_.space();
  if (layer == 0) ++forwards_;
  usage_value_ += cost_values_[static_cast<size_t>(layout_.attn_segment(layer).offset +
                                                   std::max<int64_t>(0, attn_choice_[l]))];
  usage_value_ += cost_values_[static_cast<size_t>(layout_.mlp_segment(layer).offset + best)];
  const int64_t width = space.mlp[l][static_cast<size_t>(best)];
  width_sum_[l] += static_cast<double>(width);
  width_count_[l] += 1;
  return width;
}

}  // namespace flextron::route
