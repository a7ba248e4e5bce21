// The routers of a model directory: router.json (the budget grid, sizes, the cached budget table
// and the training report) and router.safetensors (static router, surrogate and, when trained,
// dynamic router weights, prefixed "static.", "surrogate.", "dynamic.").
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/elastic_space.h"
#include "route/budget_table.h"
#include "route/choices.h"
#include "route/dynamic_router.h"
#include "route/static_router.h"
#include "route/surrogate.h"

namespace flextron::route {

inline constexpr const char* kRouterFile = "router.json";
inline constexpr const char* kRouterWeightsFile = "router.safetensors";

struct RouterBundle {
  std::optional<ChoiceLayout> layout;
  StaticRouter router{nullptr};
  Surrogate surrogate{nullptr};
  DynamicRouter dynamic{nullptr};  // null until trained
  std::vector<BudgetEntry> table;  // the static router's choice per budget
  nlohmann::json report = nlohmann::json::object();
};

// Fresh, untrained routers for `space` and the budget grid.
RouterBundle make_routers(const model::ModelConfig& config, const model::ElasticSpace& space,
                          const std::vector<double>& budgets, bool dynamic);

bool has_routers(const std::filesystem::path& dir);
void save_routers(const std::filesystem::path& dir, const RouterBundle& bundle);
// Throws flextron::Error naming the file when absent ("run flextron train-router"), malformed,
// or made for another elastic space.
RouterBundle load_routers(const std::filesystem::path& dir, const model::ModelConfig& config,
                          const model::ElasticSpace& space);

}  // namespace flextron::route
