// flextron space: show a model's elastic space (flextron.json), or write a new one.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "number_options.h"

namespace flextron::cli {

namespace {
struct SpaceArgs {
  std::string model;
  model::ElasticSpaceOptions options;
  bool write = false;
  bool json = false;
};

void run_space(const SpaceArgs& a, bool new_space) {
  io::LoadOptions load;
  load.with_tokenizer = false;
  auto loaded = io::load_model_dir(a.model, load);
  const auto& config = loaded.model->config();
  auto space = loaded.space;
  if (new_space) {
    const bool ranked = space.ranked;
    space = model::default_elastic_space(config, a.options);
    space.ranked = ranked;  // the weights' order does not change
  }
  if (a.write) model::save_elastic_space(a.model, space);
  if (a.json) {
    std::cout << model::elastic_space_to_json(space).dump(2) << "\n";
    return;
  }
  std::printf("%s%s (%s, units %s)\n", a.model.c_str(), a.write ? "/flextron.json written" : "",
              new_space ? "new space" : "current space",
              space.ranked ? "ranked by importance" : "NOT ranked: run `flextron rank` first");
  std::printf("%-6s %-40s %s\n", "layer", "MLP widths (neurons)", "attention widths (KV groups)");
  for (size_t l = 0; l < space.mlp.size(); ++l)
    std::printf("%-6zu %-40s %s\n", l, model::format_widths(space.mlp[l]).c_str(),
                model::format_widths(space.kv_groups[l]).c_str());
}
}  // namespace

void register_space(CLI::App& app) {
  auto a = std::make_shared<SpaceArgs>();
  auto* cmd = app.add_subcommand(
      "space", "Show the elastic space (flextron.json); with options, make and --write a new one");
  cmd->add_option("--model", a->model, "Model directory")->required();
  auto* mlp = cmd->add_option("--mlp-fractions", a->options.mlp_fractions,
                              "MLP widths as fractions of each layer's neurons")
                  ->check(unit_fraction())
                  ->delimiter(',');
  auto* attn = cmd->add_option("--attn-fractions", a->options.attn_fractions,
                               "Attention widths as fractions of each layer's KV groups")
                   ->check(unit_fraction())
                   ->delimiter(',');
  auto* multiple = cmd->add_option("--mlp-multiple", a->options.mlp_multiple,
                                   "Round MLP widths to multiples of this (0: 16 from 1024 "
                                   "neurons up, else 8)")
                       ->check(non_negative());
  cmd->add_flag("--write", a->write, "Write flextron.json into the model directory");
  cmd->add_flag("--json", a->json, "Print JSON");
  cmd->callback([a, mlp, attn, multiple] {
    const bool new_space = mlp->count() + attn->count() + multiple->count() > 0;
    run_space(*a, new_space || a->write);
  });
}

}  // namespace flextron::cli
