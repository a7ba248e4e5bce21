#include "route/select.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "route/budget_table.h"
#include "route/router_file.h"

namespace flextron::route {

RouterKind parse_router_kind(const std::string& name) {
  if (name == "static") return RouterKind::Static;
  if (name == "dynamic") return RouterKind::Dynamic;
  if (name == "uniform") return RouterKind::Uniform;
  fail("--router", "unknown router \"" + name + "\" (use static, dynamic or uniform)");
}

std::string router_kind_name(RouterKind kind) {
  switch (kind) {
    case RouterKind::Static:
      return "static";
    case RouterKind::Dynamic:
      return "dynamic";
    case RouterKind::Uniform:
      return "uniform";
  }
  return "static";
}

nlohmann::json BudgetPlan::to_json(const model::ModelConfig& config) const {
  nlohmann::json j = {{"router", router_kind_name(kind)},
                      {"budget", budget.value},
                      {"budget_kind", budget_kind_name(budget.kind)},
                      {"architecture", model::architecture_to_json(arch)},
                      {"architecture_summary", model::describe_architecture(arch, config)},
                      {"predicted_latency_fraction", predicted_latency_fraction},
                      {"predicted_decode_ms", predicted_decode_ms},
                      {"full_decode_ms", full_decode_ms}};
  if (budget.kind == BudgetKind::Quality) {
    j["budget"] = budget.quality.text;
    j["target_loss"] = target_loss;
    j["target_perplexity"] = std::exp(target_loss);
  }
  if (predicted_loss > 0.0) {
    j["predicted_loss"] = predicted_loss;
    j["predicted_perplexity"] = std::exp(predicted_loss);
  }
  if (dynamic && dynamic->forwards() > 0) {
    j["dynamic_mean_mlp_widths"] = dynamic->mean_mlp_widths();
    const double ms = table.fixed_ms() +
                      dynamic->usage_ms().item<double>() / static_cast<double>(dynamic->forwards());
    j["dynamic_predicted_decode_ms"] = ms;
    j["dynamic_predicted_latency_fraction"] = ms / full_decode_ms;
  }
  return j;
}

std::string missing_latency_table_message() {
  return "this model has no latency table, so it runs the full model only (budget 1.0); "
         "flextron convert or flextron profile makes one";
}

void check_latency_weights(const std::filesystem::path& dir, const std::string& weights) {
  const auto file = dir / kLatencyFile;
  if (!std::filesystem::exists(file)) return;
  std::ifstream in(file);
  const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(file.string(), "is not valid JSON");
  std::string profiled = "f32";
  if (j.contains("hardware") && j["hardware"].is_object() && j["hardware"].contains("weights") &&
      j["hardware"]["weights"].is_string())
    profiled = j["hardware"]["weights"].get<std::string>();
  if (profiled != weights)
    fail(file.string(), "was profiled with " + profiled + " weights, this run serves " + weights +
                            " weights (flextron profile --quant " + weights + " makes its table)");
}

BudgetPlan plan_budget(const std::filesystem::path& dir, model::TransformerImpl& model,
                       const model::ElasticSpace& space, const Budget& budget, RouterKind kind) {
  check_budget(budget, "--budget");
  const auto& config = model.config();
  BudgetPlan plan;
  plan.kind = kind;
  plan.budget = budget;
  if (!std::filesystem::exists(dir / kLatencyFile))
    fail((dir / kLatencyFile).string(), missing_latency_table_message());
  plan.table = load_latency_table(dir / kLatencyFile, config, space);
  plan.full_decode_ms = plan.table.decode_ms({});
  if (kind == RouterKind::Uniform) {
    ChoiceLayout layout(space);
    plan.arch = uniform_architecture(layout, plan.table, config, model.dtype(), budget);
  } else {
    if (budget.kind == BudgetKind::Quality && kind == RouterKind::Dynamic)
      fail("--router",
           "a quality target is met by the static router's predictions (use --router static)");
    auto routers = load_routers(dir, config, space);
    const auto& entry = lookup_budget(routers.table, budget);
    plan.arch = entry.arch;
    plan.predicted_loss = entry.predicted_loss;
    plan.full_predicted_loss = widest_entry(routers.table).predicted_loss;
    if (budget.kind == BudgetKind::Quality)
      plan.target_loss = quality_max_loss(budget.quality, plan.full_predicted_loss);
    if (kind == RouterKind::Dynamic) {
      if (!routers.dynamic)
        fail(dir / kRouterFile, "has no dynamic router (train-router --dynamic)");
      if (budget.kind != BudgetKind::Latency && budget.kind != BudgetKind::Milliseconds)
        fail("--budget-kind",
             "dynamic routing takes latency or ms budgets (it is trained on latency)");
      // The dynamic router is conditioned on the requested fraction itself, not on the static
      // choice's (which sits at or below it).
      const double requested = budget.kind == BudgetKind::Latency
                                   ? budget.value
                                   : std::min(1.0, budget.value / plan.full_decode_ms);
      torch::NoGradGuard no_grad;
      plan.dynamic = routers.dynamic;
      plan.dynamic->to(model.device());
      routers.router->to(model.device());
      auto code = routers.router->encode_budgets({requested});
      plan.dynamic->set_budget(code[0],
                               base_logits(ChoiceLayout(space), plan.arch).to(model.device()));
      plan.dynamic->set_costs(ChoiceLayout(space).cost_ms(plan.table).to(model.device()));
      plan.dynamic->set_sampling(false, 1.0);
      plan.dynamic->reset_usage();
    }
  }
  plan.predicted_decode_ms = plan.table.decode_ms(plan.arch);
  plan.predicted_latency_fraction = plan.predicted_decode_ms / plan.full_decode_ms;
  return plan;
}

}  // namespace flextron::route
