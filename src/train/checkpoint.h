// Training checkpoints that survive a kill at any moment: everything is written into
// <dir>/checkpoint.tmp, then directories are swapped by rename, so <dir>/checkpoint is always
// either the previous complete checkpoint or the new complete one.
#pragma once

#include <filesystem>
#include <optional>

#include <torch/optim/optimizer.h>
#include <nlohmann/json.hpp>

#include "model/transformer.h"

namespace flextron::train {

// state: step, tokens, seed, ... (the caller's JSON). Config and weights come from `model`.
void save_checkpoint(const std::filesystem::path& dir, model::TransformerImpl& model,
                     torch::optim::Optimizer& optimizer, const nlohmann::json& state);

// The directory of the newest complete checkpoint under `dir`, if any.
std::optional<std::filesystem::path> find_checkpoint(const std::filesystem::path& dir);

// Loads weights and optimizer state into `model`/`optimizer` and returns the state JSON.
// Throws flextron::Error if the checkpoint's config differs from the model's (naming the field).
nlohmann::json load_checkpoint(const std::filesystem::path& checkpoint,
                               model::TransformerImpl& model, torch::optim::Optimizer& optimizer);

}  // namespace flextron::train
