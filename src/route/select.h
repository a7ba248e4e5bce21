// Serving a budget (FLEXTRON.md section 6): from what the user asks (a budget, its kind, and how
// to route) to what the model runs. Static routing and the uniform baseline resolve to one
// architecture by table look-up; dynamic routing hands the forward pass a router set up for the
// budget. Every command that takes --budget goes through plan_budget.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "model/elastic_space.h"
#include "model/transformer.h"
#include "route/budget.h"
#include "route/dynamic_router.h"
#include "route/latency.h"

namespace flextron::route {

enum class RouterKind { Static, Dynamic, Uniform };

// "static", "dynamic" or "uniform"; anything else is an error listing these.
RouterKind parse_router_kind(const std::string& name);
std::string router_kind_name(RouterKind kind);

struct BudgetPlan {
  RouterKind kind = RouterKind::Static;
  Budget budget;
  // Static / uniform: the architecture to run. Dynamic: the static router's choice for the budget
  // (where the dynamic router starts from; it varies MLP widths per token around it).
  model::Architecture arch;
  double predicted_latency_fraction = 1.0;  // of arch, by the latency table
  double predicted_decode_ms = 0.0;
  double full_decode_ms = 0.0;
  // Static: the surrogate's predicted held-out loss of arch (nats; 0 when not known), and for a
  // quality budget the largest loss its target allows in the same scale.
  double predicted_loss = 0.0;
  double full_predicted_loss = 0.0;  // the full model's, in the same scale
  double target_loss = 0.0;
  LatencyTable table;
  DynamicRouter dynamic{nullptr};  // dynamic only: ready to route at this budget

  model::LayerRouter* router() { return dynamic ? dynamic.get() : nullptr; }
  // Kind, budget, architecture (compact) and predictions; with a dynamic router that has run,
  // the mean MLP width it chose per layer and its predicted milliseconds per token.
  nlohmann::json to_json(const model::ModelConfig& config) const;
};

// Why a model without a latency table (dir/latency.json) cannot run at a budget, and what makes
// one: the one wording for every command and the server.
std::string missing_latency_table_message();

// A latency table names the weight format it was profiled with ("weights" in its hardware, f32
// when absent). Throws flextron::Error naming dir/latency.json when the table exists and was
// profiled for another format than `weights` (the one this run serves), since its milliseconds
// would then not be this run's; does nothing without a table.
void check_latency_weights(const std::filesystem::path& dir, const std::string& weights);

// Reads dir/latency.json (and dir/router.json unless uniform). Throws flextron::Error for an
// invalid budget, a budget below the smallest achievable, missing or mismatched files, or a
// params/memory budget with dynamic routing (which is trained on latency). Without latency.json
// the error names it and says missing_latency_table_message().
BudgetPlan plan_budget(const std::filesystem::path& dir, model::TransformerImpl& model,
                       const model::ElasticSpace& space, const Budget& budget, RouterKind kind);

}  // namespace flextron::route
