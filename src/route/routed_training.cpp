#include "route/routed_training.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include <torch/nn/functional/loss.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

StaticRouting::StaticRouting(const ChoiceLayout& layout, torch::Tensor choices)
    : layout_(layout), choices_(std::move(choices)) {}

model::LayerDecision StaticRouting::route(int64_t layer, const torch::Tensor& hidden,
                                          bool /*prefill*/) {
  const auto l = static_cast<size_t>(layer);
  const Segment mlp = layout_.mlp_segment(layer), attn = layout_.attn_segment(layer);
  auto mlp_y = choices_.narrow(0, mlp.offset, mlp.size);
  auto attn_y = choices_.narrow(0, attn.offset, attn.size);
  const int64_t a = attn_y.argmax().item<int64_t>();
  model::LayerDecision d;
  // The MLP through the straight-through neuron mask (route/choices.h), attention scaled.
  auto inclusion = inclusion_matrix(layout_.space().mlp[l]).to(mlp_y.device());
  d.widths = {inclusion.size(1), layout_.space().kv_groups[l][static_cast<size_t>(a)]};
  d.mlp_mask = torch::matmul(mlp_y, inclusion).to(hidden.device(), hidden.scalar_type());
  d.attention_scale = attn_y[a].to(hidden.device(), hidden.scalar_type());
  return d;
}

nlohmann::json train_routed(model::TransformerImpl& model, StaticRouterImpl& router,
                            DynamicRouterImpl* dynamic, const BaseArchitecture& base_arch,
                            const ChoiceLayout& layout, const LatencyTable& table,
                            const BatchSource& batches, const RoutedTrainOptions& options,
                            const std::function<void(const std::string&)>& log) {
  if (options.steps < 1) fail("train-router", "steps must be >= 1");
  if (dynamic == nullptr && !options.train_static)
    fail("train-router", "nothing to train: no dynamic router and the static router frozen");
  torch::manual_seed(options.seed);
  std::vector<torch::Tensor> model_params;
  for (auto& p : model.parameters()) {
    p.set_requires_grad(options.train_model);
    if (options.train_model) model_params.push_back(p);
  }
  std::vector<torch::Tensor> router_params;
  if (options.train_static)
    for (auto& p : router.parameters()) router_params.push_back(p);
  if (dynamic != nullptr)
    for (auto& p : dynamic->parameters()) router_params.push_back(p);
  torch::optim::Adam router_opt(router_params, torch::optim::AdamOptions(options.router_lr));
  std::unique_ptr<torch::optim::AdamW> model_opt;
  if (options.train_model)
    model_opt = std::make_unique<torch::optim::AdamW>(
        model_params, torch::optim::AdamWOptions(options.model_lr).weight_decay(0.0));

  const auto cost = layout.cost_ms(table).to(model.device());
  if (dynamic != nullptr) dynamic->set_costs(cost);
  const double fixed = table.fixed_ms(), full = table.decode_ms({});
  const auto& grid = router.budgets();
  const bool was_training = model.is_training();
  model.train();
  double ce_sum = 0, lat_sum = 0;
  int64_t tail = 0;
  const auto started = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < options.steps; ++step) {
    const double progress = static_cast<double>(step) / static_cast<double>(options.steps);
    const double tau = options.tau_start * std::pow(options.tau_end / options.tau_start, progress);
    const double budget = grid[static_cast<size_t>(step) % grid.size()];
    auto [inputs, targets] = batches(step);
    inputs = inputs.to(model.device());
    targets = targets.to(model.device());
    auto code = router.encode_budgets({budget});
    torch::Tensor logits, latency_ms;
    const bool use_dynamic = dynamic != nullptr && (!options.train_static || step % 2 == 1);
    if (use_dynamic) {
      dynamic->set_budget(code[0], base_logits(layout, base_arch(budget)).to(model.device()));
      dynamic->set_sampling(true, tau);
      dynamic->reset_usage();
      logits = model.forward(inputs, nullptr, nullptr, dynamic);
      latency_ms = dynamic->usage_ms() + fixed;
    } else {
      auto choices = sample_choices(layout, router.forward(code), tau, true)[0];
      StaticRouting routing(layout, choices);
      logits = model.forward(inputs, nullptr, nullptr, &routing);
      latency_ms = torch::dot(choices, cost) + fixed;
    }
    auto ce = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat), targets.reshape({-1}));
    auto fraction = latency_ms / full;
    // Over the budget is a violation; under it is width left unused (what makes a router run
    // at its budget rather than anywhere below it), priced at a tenth.
    auto loss = ce + options.latency_weight *
                         (torch::relu(fraction - budget) + 0.1 * torch::relu(budget - fraction)) /
                         budget;
    router_opt.zero_grad();
    if (model_opt) model_opt->zero_grad();
    loss.backward();
    router_opt.step();
    if (model_opt) {
      torch::nn::utils::clip_grad_norm_(model_params, 1.0);
      model_opt->step();
    }
    const int64_t every = std::max<int64_t>(1, options.steps / 10);
    if (step % every == 0) ce_sum = lat_sum = 0, tail = 0;  // averages over the last interval
    ce_sum += ce.item<double>();
    lat_sum += fraction.item<double>() / budget;
    ++tail;
    if (log && ((step + 1) % every == 0 || step + 1 == options.steps)) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      const double eta =
          secs / static_cast<double>(step + 1) * static_cast<double>(options.steps - step - 1);
      char line[256];
      std::snprintf(line, sizeof line,
                    "%s step %lld/%lld  loss %.4f  latency/budget %.3f  tau %.2f  "
                    "%.0f tok/s  ETA %.0fs",
                    options.train_model ? "joint" : "dynamic", static_cast<long long>(step + 1),
                    static_cast<long long>(options.steps), ce_sum / static_cast<double>(tail),
                    lat_sum / static_cast<double>(tail), tau,
                    static_cast<double>(inputs.numel() * (step + 1)) / std::max(secs, 1e-9), eta);
      log(line);
    }
  }
  for (auto& p : model.parameters()) p.set_requires_grad(true);
  model.train(was_training);
  if (dynamic != nullptr) dynamic->set_sampling(false, 1.0);
  return {{"steps", options.steps},
          {"final_lm_loss", ce_sum / static_cast<double>(std::max<int64_t>(1, tail))},
          {"final_latency_over_budget", lat_sum / static_cast<double>(std::max<int64_t>(1, tail))}};
}

}  // namespace flextron::route
