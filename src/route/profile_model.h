// flextron profile as a library call: measure a model directory's latency table on this machine,
// check its predictions against end-to-end measurement of random architectures, print both, and
// write the table (with the check) to latency.json.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "io/model_dir.h"
#include "route/latency.h"

namespace flextron::route {

struct ProfileModelOptions {
  std::filesystem::path model;
  std::filesystem::path out;  // default: model/latency.json
  ProfileOptions profile;
  int64_t check = 20;  // random architectures measured against the table (0: none)
  // The runtime whose decode steps calibrate and check the table: auto (the fast runtime where
  // it runs the model, as generate and serve choose), fast or torch.
  std::string runtime = "auto";
  // The fast runtime's weight format (f32, q8_0, q4_0); the table records it.
  std::string quant = "auto";  // auto: the directory's own (io::LoadedModel::stored_weights)
  io::LoadOptions load;
};

// Returns what latency.json holds. Progress on stderr, the table on stdout.
nlohmann::json profile_model_dir(const ProfileModelOptions& options);

}  // namespace flextron::route
