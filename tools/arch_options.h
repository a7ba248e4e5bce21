// --arch / --arch-layers: which sub-network of an elastic model a command runs (see
// model/elastic_space.h for the forms).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "io/model_dir.h"

namespace flextron::cli {

struct ArchArgs {
  std::string arch;         // "mlp=0.5,attn=0.75" or an architecture .json file
  std::string arch_layers;  // "mlp:0.5,0.5,...;attn:1,0.5,..."

  void add_to(CLI::App* cmd);
  bool given() const { return !arch.empty() || !arch_layers.empty(); }
  // The chosen architecture checked against the model's elastic space; empty = full model.
  model::Architecture resolve(const io::LoadedModel& loaded) const;
};

}  // namespace flextron::cli
