// Which sub-network a command runs: an explicit architecture (--arch / --arch-layers, see
// model/elastic_space.h for the forms) or a budget (--budget, --budget-kind, --router) resolved
// by the model's latency table and routers (route/select.h).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "io/model_dir.h"
#include "route/select.h"

namespace flextron::cli {

// What a command runs: arch (empty = full model), or a plan whose dynamic router routes.
struct Selection {
  model::Architecture arch;
  std::optional<route::BudgetPlan> plan;
  model::LayerRouter* router() { return plan ? plan->router() : nullptr; }
  // "mlp 88/172 (51%), ..." plus, for a budget, how it was chosen: for the one-line report.
  std::string describe(const model::ModelConfig& config) const;
  nlohmann::json to_json(const model::ModelConfig& config) const;
};

struct ArchArgs {
  std::string arch;         // "mlp=0.5,attn=0.75" or an architecture .json file
  std::string arch_layers;  // "mlp:0.5,0.5,...;attn:1,0.5,..."
  std::string budget;       // empty: not given
  std::string budget_kind = "latency";
  std::string router = "static";

  // with_dynamic: whether --router dynamic is offered (not for extract: one architecture only).
  void add_to(CLI::App* cmd, bool with_dynamic = true);
  bool given() const { return !arch.empty() || !arch_layers.empty() || !budget.empty(); }
  // The architecture or budget plan, checked against the model in `dir`.
  Selection resolve(io::LoadedModel& loaded, const std::filesystem::path& dir) const;

 private:
  bool with_dynamic_ = true;
};

}  // namespace flextron::cli
