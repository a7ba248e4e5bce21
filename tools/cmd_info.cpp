// flextron info: what a model directory holds and where each part came from (pipeline/describe.h).
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "pipeline/describe.h"

namespace flextron::cli {

void register_info(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "info",
      "Describe a model directory: weights, tokenizer, elastic space, latency table, routers and "
      "the budgets it reaches");
  cmd->add_option("--model", *dir, "Model directory")->required();
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->callback([dir, json] {
    const auto d = pipeline::describe_model_dir(*dir);
    std::cout << (*json ? d.dump(2) + "\n" : pipeline::format_model_description(d));
  });
}

}  // namespace flextron::cli
