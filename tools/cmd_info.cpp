// flextron info: what a model directory holds (config, parameter count, tokenizer).
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "io/model_dir.h"

namespace flextron::cli {

namespace {
void run_info(const std::string& dir, bool json) {
  auto loaded = io::load_model_dir(dir);
  auto j = model::config_to_json(loaded.model->config());
  j["parameters"] = loaded.model->parameter_count();
  j["tokenizer"] = loaded.tokenizer ? loaded.tokenizer->file_name() : "";
  j["elastic_space"] = model::elastic_space_to_json(loaded.space);
  if (json) {
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::cout << dir << "\n";
  for (const auto& [key, value] : j.items())
    std::cout << "  " << key << ": " << value.dump() << "\n";
}
}  // namespace

void register_info(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("info", "Describe a model directory");
  cmd->add_option("--model", *dir, "Model directory")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->callback([dir, json] { run_info(*dir, *json); });
}

}  // namespace flextron::cli
