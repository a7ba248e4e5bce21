#include "arch_options.h"

#include <cstdio>

#include "core/error.h"
#include "core/parse.h"

namespace flextron::cli {

std::string Selection::describe(const model::ModelConfig& config) const {
  std::string text = model::describe_architecture(arch, config);
  if (!plan) return text;
  char buf[160];
  std::snprintf(buf, sizeof buf, " [%s router, %s; predicted %.3f of full latency, %.3f ms/token]",
                route::router_kind_name(plan->kind).c_str(),
                route::describe_budget(plan->budget).c_str(), plan->predicted_latency_fraction,
                plan->predicted_decode_ms);
  return text + buf;
}

nlohmann::json Selection::to_json(const model::ModelConfig& config) const {
  if (plan) return plan->to_json(config);
  return {{"architecture",
           model::architecture_to_json(arch.empty() ? model::full_architecture(config) : arch)},
          {"architecture_summary", model::describe_architecture(arch, config)}};
}

void ArchArgs::add_to(CLI::App* cmd, bool with_dynamic) {
  auto* uniform = cmd->add_option(
      "--arch", arch,
      "Sub-network: \"mlp=F,attn=F\" (fractions in (0,1] or unit counts) or a .json file");
  auto* layers = cmd->add_option("--arch-layers", arch_layers,
                                 "Per-layer widths: \"mlp:F1,F2,...;attn:F1,F2,...\"");
  auto* budget_opt = cmd->add_option(
      "--budget", budget,
      "Run at a budget instead: a fraction of full latency (default kind), or a quality target "
      "(ppl+2%, loss+0.05, ppl<=250: the fastest sub-network predicted to meet it)");
  cmd->add_option("--budget-kind", budget_kind,
                  "latency (fraction), ms (per token), params (fraction), memory (MiB) or quality")
      ->capture_default_str();
  cmd->add_option("--router", router,
                  with_dynamic ? "How a budget picks widths: static, dynamic or uniform"
                               : "How a budget picks widths: static or uniform")
      ->capture_default_str();
  uniform->excludes(layers);
  uniform->excludes(budget_opt);
  layers->excludes(budget_opt);
  with_dynamic_ = with_dynamic;
}

Selection ArchArgs::resolve(io::LoadedModel& loaded, const std::filesystem::path& dir) const {
  Selection s;
  if (!budget.empty()) {
    route::Budget b;
    b.kind = route::parse_budget_kind(budget_kind);
    // "ppl+2%" is a quality target whatever the default kind says.
    if (route::looks_like_quality_target(budget) && b.kind == route::BudgetKind::Latency)
      b.kind = route::BudgetKind::Quality;
    if (b.kind == route::BudgetKind::Quality)
      b.quality = route::parse_quality_target(budget, "--budget");
    else
      b.value = parse_double(budget, "--budget");
    const auto kind = route::parse_router_kind(router);
    if (kind == route::RouterKind::Dynamic && !with_dynamic_)
      fail("--router",
           "dynamic routing varies widths per token; this command needs one "
           "architecture (use static or uniform)");
    // The full model needs no table, as the server treats it (route/select.h).
    if (b.kind == route::BudgetKind::Latency && b.value == 1.0 &&
        kind != route::RouterKind::Dynamic && !std::filesystem::exists(dir / route::kLatencyFile))
      return s;
    s.plan = route::plan_budget(dir, *loaded.model, loaded.space, b, kind);
    s.arch = s.plan->arch;
    return s;
  }
  if (!arch.empty() || !arch_layers.empty())
    s.arch = model::parse_architecture(arch.empty() ? arch_layers : arch, loaded.model->config(),
                                       loaded.space);
  return s;
}

}  // namespace flextron::cli
