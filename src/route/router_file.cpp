#include "route/router_file.h"

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace flextron::route {

namespace {

constexpr int64_t kDynamicHidden = 64;

void put(io::TensorMap& out, const std::string& prefix, const torch::nn::Module& module) {
  for (const auto& p : module.named_parameters()) out[prefix + p.key()] = p.value().detach();
  for (const auto& b : module.named_buffers()) out[prefix + b.key()] = b.value().detach();
}

void take(const io::TensorMap& in, const std::string& prefix, torch::nn::Module& module,
          const std::string& where) {
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& dst) {
    auto it = in.find(prefix + name);
    if (it == in.end()) fail(where, "missing tensor " + prefix + name);
    if (it->second.sizes() != dst.sizes())
      fail(where, "tensor " + prefix + name + " has the wrong shape for this elastic space");
    dst.copy_(it->second);
  };
  for (auto& p : module.named_parameters()) copy(p.key(), p.value());
  for (auto& b : module.named_buffers()) copy(b.key(), b.value());
}

}  // namespace

RouterBundle make_routers(const model::ModelConfig& config, const model::ElasticSpace& space,
                          const std::vector<double>& budgets, bool dynamic) {
  RouterBundle b;
  b.layout.emplace(space);
  b.router = StaticRouter(b.layout->size(), budgets);
  b.surrogate = Surrogate(b.layout->size(), 128);
  if (dynamic)
    b.dynamic = DynamicRouter(*b.layout, config.hidden_size, static_cast<int64_t>(budgets.size()),
                              kDynamicHidden);
  return b;
}

bool has_routers(const std::filesystem::path& dir) {
  return std::filesystem::exists(dir / kRouterFile);
}

void save_routers(const std::filesystem::path& dir, const RouterBundle& bundle) {
  io::TensorMap tensors;
  put(tensors, "static.", *bundle.router);
  put(tensors, "surrogate.", *bundle.surrogate);
  if (bundle.dynamic) put(tensors, "dynamic.", *bundle.dynamic);
  io::save_safetensors(dir / kRouterWeightsFile, tensors);
  nlohmann::json table = nlohmann::json::array();
  for (const auto& e : bundle.table) table.push_back(budget_entry_to_json(e));
  nlohmann::json j = {{"format", "flextron-router"},
                      {"version", 1},
                      {"budgets", bundle.router->budgets()},
                      {"static_hidden", bundle.router->hidden()},
                      {"dynamic", static_cast<bool>(bundle.dynamic)},
                      {"dynamic_hidden", kDynamicHidden},
                      {"elastic_space", model::elastic_space_to_json(bundle.layout->space())},
                      {"budget_table", table},
                      {"report", bundle.report}};
  io::write_text_atomically(dir / kRouterFile, j.dump(2) + "\n");
}

RouterBundle load_routers(const std::filesystem::path& dir, const model::ModelConfig& config,
                          const model::ElasticSpace& space) {
  const auto file = dir / kRouterFile;
  const std::string where = file.string();
  if (!std::filesystem::exists(file))
    fail(where, "missing: this model has no routers (run flextron train-router)");
  auto j = io::read_json_file(file);
  try {
    if (!j.contains("format") || j["format"] != "flextron-router")
      fail(where, "not a router file (\"format\" must be \"flextron-router\")");
    auto saved_space = model::elastic_space_from_json(j.at("elastic_space"), config, where);
    if (saved_space.mlp != space.mlp || saved_space.kv_groups != space.kv_groups)
      fail(where,
           "trained for another elastic space than flextron.json's (train the routers again)");
    auto budgets = j.at("budgets").get<std::vector<double>>();
    RouterBundle b = make_routers(config, space, budgets, j.at("dynamic").get<bool>());
    auto tensors = io::load_safetensors(dir / kRouterWeightsFile);
    const std::string weights = (dir / kRouterWeightsFile).string();
    take(tensors, "static.", *b.router, weights);
    take(tensors, "surrogate.", *b.surrogate, weights);
    if (b.dynamic) take(tensors, "dynamic.", *b.dynamic, weights);
    for (const auto& e : j.at("budget_table")) b.table.push_back(budget_entry_from_json(e, where));
    for (const auto& e : b.table) model::check_in_space(e.arch, space, config, where);
    b.report = j.value("report", nlohmann::json::object());
    return b;
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("malformed router file: ") + e.what());
  }
}

}  // namespace flextron::route
