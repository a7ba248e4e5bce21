#include "route/static_router.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include <torch/optim/adam.h>
#include <torch/torch.h>

#include "core/error.h"

namespace flextron::route {

StaticRouterImpl::StaticRouterImpl(int64_t choices, std::vector<double> budgets, int64_t hidden)
    : budgets_(std::move(budgets)), hidden_(hidden) {
  if (budgets_.empty()) fail("router", "needs at least one budget");
  if (!std::is_sorted(budgets_.begin(), budgets_.end()) ||
      std::adjacent_find(budgets_.begin(), budgets_.end()) != budgets_.end())
    fail("router", "budgets must be ascending and distinct");
  const auto k = static_cast<int64_t>(budgets_.size());
  fc1 = register_module("fc1", torch::nn::Linear(k, hidden));
  out = register_module("out", torch::nn::Linear(hidden, choices));
}

torch::Tensor StaticRouterImpl::encode_budgets(const std::vector<double>& budgets) const {
  const auto k = static_cast<int64_t>(budgets_.size());
  auto codes = torch::zeros({static_cast<int64_t>(budgets.size()), k});
  for (size_t n = 0; n < budgets.size(); ++n) {
    const double b = budgets[n];
    const auto row = static_cast<int64_t>(n);
    if (b <= budgets_.front()) {
      codes[row][0] = 1.0;
    } else if (b >= budgets_.back()) {
      codes[row][k - 1] = 1.0;
    } else {
      size_t i = 1;
      while (budgets_[i] < b) ++i;
      const double t = (b - budgets_[i - 1]) / (budgets_[i] - budgets_[i - 1]);
      codes[row][static_cast<int64_t>(i) - 1] = 1.0 - t;
      codes[row][static_cast<int64_t>(i)] = t;
    }
  }
  return codes.to(fc1->weight.device());
}

torch::Tensor StaticRouterImpl::forward(const torch::Tensor& codes) {
  return out->forward(torch::leaky_relu(fc1->forward(codes), 0.01));
}

namespace {

// Latency fraction of each row of straight-through choices [N, size].
torch::Tensor latency_fraction(const torch::Tensor& choices, const torch::Tensor& cost_ms,
                               double fixed_ms, double full_ms) {
  return (torch::matmul(choices, cost_ms) + fixed_ms) / full_ms;
}

std::vector<LossSample> pair_up(const std::vector<model::Architecture>& archs,
                                const std::vector<double>& losses) {
  std::vector<LossSample> out;
  for (size_t i = 0; i < archs.size(); ++i) out.push_back({archs[i], losses[i]});
  return out;
}

}  // namespace

StaticRouterTrainReport train_static_router(StaticRouterImpl& router, SurrogateImpl& surrogate,
                                            const ChoiceLayout& layout, const LatencyTable& table,
                                            const LossOracle& oracle,
                                            const StaticRouterTrainOptions& options,
                                            const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  if (options.steps < 1) fail("train-router", "steps must be >= 1");
  if (options.surrogate_samples < 8) fail("train-router", "needs at least 8 surrogate samples");
  torch::manual_seed(options.seed);
  StaticRouterTrainReport report;

  // 1. Fit the surrogate on architectures spread over the space (plus the smallest and the full
  // one), reporting how well it ranks the held-out share.
  auto archs = sample_spread_architectures(layout.space(), options.surrogate_samples, options.seed);
  archs.push_back(model::widest_architecture(layout.space()));
  archs.push_back(model::narrowest_architecture(layout.space()));
  say("surrogate: measuring the held-out loss of " + std::to_string(archs.size()) +
      " architectures");
  auto losses = oracle(archs);
  auto samples = pair_up(archs, losses);
  const auto holdout =
      std::max<size_t>(2, static_cast<size_t>(options.surrogate_holdout *
                                              static_cast<double>(options.surrogate_samples)));
  std::vector<LossSample> fit_set(samples.begin() + static_cast<std::ptrdiff_t>(holdout),
                                  samples.end());
  std::vector<LossSample> held(samples.begin(),
                               samples.begin() + static_cast<std::ptrdiff_t>(holdout));
  fit_surrogate(surrogate, layout, fit_set, options.fit);
  {
    std::vector<model::Architecture> held_archs;
    std::vector<double> truth;
    for (const auto& s : held) {
      held_archs.push_back(s.arch);
      truth.push_back(s.loss);
    }
    auto pred = predict_losses(surrogate, layout, held_archs);
    report.surrogate_heldout_spearman = spearman(pred, truth);
    double se = 0;
    for (size_t i = 0; i < pred.size(); ++i) se += (pred[i] - truth[i]) * (pred[i] - truth[i]);
    report.surrogate_heldout_rmse = std::sqrt(se / static_cast<double>(pred.size()));
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "surrogate: held-out rank correlation %.3f, RMSE %.4f nats (%zu held out)",
                report.surrogate_heldout_spearman, report.surrogate_heldout_rmse, held.size());
  say(line);
  fit_surrogate(surrogate, layout, samples, options.fit);  // then use every pair

  // 2. Train the router against SM + latency, with the LLM out of the loop.
  for (auto& p : surrogate.parameters()) p.set_requires_grad(false);
  const auto cost = layout.cost_ms(table);
  const double fixed = table.fixed_ms(), full = table.decode_ms({});
  const auto& grid = router.budgets();
  torch::optim::Adam optimizer(router.parameters(), torch::optim::AdamOptions(options.lr));
  std::mt19937_64 rng(options.seed + 1);
  std::uniform_real_distribution<double> between(grid.front(), grid.back());
  for (int64_t step = 1; step <= options.steps; ++step) {
    const double progress = static_cast<double>(step - 1) / static_cast<double>(options.steps);
    const double tau = options.tau_start * std::pow(options.tau_end / options.tau_start, progress);
    // Every grid budget, plus as many in between (the interpolated codes must route sensibly).
    std::vector<double> budgets = grid;
    for (size_t i = 0; i < grid.size(); ++i) budgets.push_back(between(rng));
    auto target = torch::tensor(budgets, torch::kDouble).to(torch::kFloat);
    auto choices =
        sample_choices(layout, router.forward(router.encode_budgets(budgets)), tau, true);
    auto lat = latency_fraction(choices, cost, fixed, full);
    auto over = torch::relu(lat - target) / target;
    auto loss = (surrogate.forward(choices) + options.latency_weight * over).mean();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();

    if (step % options.check_every != 0 && step != options.steps) continue;
    // Does the SM still know the losses of what the router now picks?
    std::vector<model::Architecture> picked;
    {
      torch::NoGradGuard no_grad;
      auto logits = router.forward(router.encode_budgets(grid));
      for (int64_t i = 0; i < logits.size(0); ++i) picked.push_back(layout.decode(logits[i]));
    }
    auto truth = oracle(picked);
    auto pred = predict_losses(surrogate, layout, picked);
    double worst = 0;
    for (size_t i = 0; i < pred.size(); ++i)
      worst = std::max(worst, std::abs(pred[i] - truth[i]) / std::max(1e-9, truth[i]));
    const bool refit = worst > options.surrogate_tolerance;
    report.log.push_back({{"step", step},
                          {"tau", tau},
                          {"objective", loss.item<double>()},
                          {"surrogate_worst_relative_error", worst},
                          {"refit", refit}});
    std::snprintf(line, sizeof line,
                  "router step %lld/%lld  tau %.2f  objective %.4f  SM worst error %.1f%%%s",
                  static_cast<long long>(step), static_cast<long long>(options.steps), tau,
                  loss.item<double>(), 100.0 * worst, refit ? "  -> refit" : "");
    say(line);
    if (refit) {
      auto more = pair_up(picked, truth);
      samples.insert(samples.end(), more.begin(), more.end());
      SurrogateFitOptions again = options.fit;
      again.epochs = std::max<int64_t>(1, options.fit.epochs / 2);
      fit_surrogate(surrogate, layout, samples, again);
      ++report.refits;
    }
  }
  for (auto& p : surrogate.parameters()) p.set_requires_grad(true);
  report.surrogate_samples = static_cast<int64_t>(samples.size());
  return report;
}

}  // namespace flextron::route
