#include "route/surrogate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <torch/nn/functional/activation.h>
#include <torch/optim/adam.h>
#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

SurrogateImpl::SurrogateImpl(int64_t inputs, int64_t hidden) {
  fc1 = register_module("fc1", torch::nn::Linear(inputs, hidden));
  fc2 = register_module("fc2", torch::nn::Linear(hidden, hidden));
  out = register_module("out", torch::nn::Linear(hidden, 1));
  loss_mean = register_buffer("loss_mean", torch::zeros({1}));
  loss_scale = register_buffer("loss_scale", torch::ones({1}));
}

torch::Tensor SurrogateImpl::forward(const torch::Tensor& choices) {
  auto h = torch::relu(fc1->forward(choices));
  h = torch::relu(fc2->forward(h));
  return out->forward(h).squeeze(-1) * loss_scale + loss_mean;
}

double fit_surrogate(SurrogateImpl& surrogate, const ChoiceLayout& layout,
                     const std::vector<LossSample>& samples, const SurrogateFitOptions& options) {
  if (samples.size() < 2) fail("surrogate", "needs at least 2 (architecture, loss) samples");
  std::vector<torch::Tensor> rows;
  std::vector<double> losses;
  for (const auto& s : samples) {
    rows.push_back(layout.encode(s.arch));
    losses.push_back(s.loss);
  }
  auto x = torch::stack(rows);
  auto y = torch::tensor(losses, torch::kDouble).to(torch::kFloat);
  {
    torch::NoGradGuard no_grad;
    surrogate.loss_mean.fill_(y.mean().item<double>());
    surrogate.loss_scale.fill_(std::max(1e-3, y.std().item<double>()));
  }
  // Fitting may happen while router training holds the SM frozen; unfreeze for the fit only.
  std::vector<bool> frozen;
  for (auto& p : surrogate.parameters()) {
    frozen.push_back(!p.requires_grad());
    p.set_requires_grad(true);
  }
  torch::optim::Adam optimizer(
      surrogate.parameters(),
      torch::optim::AdamOptions(options.lr).weight_decay(options.weight_decay));
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    optimizer.zero_grad();
    // The loss on standardised targets, so the learning rate does not depend on the loss scale.
    auto error = (surrogate.forward(x) - y) / surrogate.loss_scale;
    error.pow(2).mean().backward();
    optimizer.step();
  }
  auto params = surrogate.parameters();
  for (size_t i = 0; i < params.size(); ++i) params[i].set_requires_grad(!frozen[i]);
  torch::NoGradGuard no_grad;
  return std::sqrt((surrogate.forward(x) - y).pow(2).mean().item<double>());
}

std::vector<double> predict_losses(SurrogateImpl& surrogate, const ChoiceLayout& layout,
                                   const std::vector<model::Architecture>& archs) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> rows;
  for (const auto& a : archs) rows.push_back(layout.encode(a));
  auto pred = surrogate.forward(torch::stack(rows)).to(torch::kDouble).contiguous();
  return {pred.data_ptr<double>(), pred.data_ptr<double>() + pred.numel()};
}

std::vector<model::Architecture> sample_spread_architectures(const model::ElasticSpace& space,
                                                             int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> level(0.0, 1.0);
  std::normal_distribution<double> jitter(0.0, 1.0);
  auto pick = [&](const std::vector<int64_t>& choices, double u) {
    const double top = static_cast<double>(choices.size() - 1);
    const double i = std::clamp(std::round(u * top + jitter(rng)), 0.0, top);
    return choices[static_cast<size_t>(i)];
  };
  std::vector<model::Architecture> out;
  for (int64_t n = 0; n < count; ++n) {
    const double u = level(rng);
    model::Architecture arch;
    for (size_t l = 0; l < space.mlp.size(); ++l)
      arch.push_back({pick(space.mlp[l], u), pick(space.kv_groups[l], u)});
    out.push_back(arch);
  }
  return out;
}

namespace {
std::vector<double> ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double mean_rank = 0.5 * static_cast<double>(i + j);
    for (size_t k = i; k <= j; ++k) r[order[k]] = mean_rank;
    i = j + 1;
  }
  return r;
}
}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.size() < 2)
    fail("spearman", "needs two series of equal length >= 2");
  const auto ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n;
  const double mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    cov += (ra[i] - ma) * (rb[i] - mb);
    va += (ra[i] - ma) * (ra[i] - ma);
    vb += (rb[i] - mb) * (rb[i] - mb);
  }
  return (va == 0 || vb == 0) ? 0.0 : cov / std::sqrt(va * vb);
}

}  // namespace flextron::route
