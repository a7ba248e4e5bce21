// flextron rank as a library call: score a model directory's units on calibration text, permute
// them into descending importance (same function) and write the ranked model directory with
// flextron.json marked `ranked` and importance.json beside it.
#pragma once

#include <filesystem>
#include <string>

#include "io/model_dir.h"
#include "train/importance.h"

namespace flextron::train {

struct RankModelOptions {
  std::filesystem::path model;
  std::filesystem::path data;  // calibration text (UTF-8)
  std::filesystem::path out;
  int64_t samples = 1024;  // calibration sequences
  int64_t seq_len = 256;
  Aggregation aggregation = Aggregation::L2;
  int64_t batch = 8;
  io::LoadOptions load;
};

struct RankModelResult {
  RankResult ranked;
  nlohmann::json report;  // what importance.json holds
};

// Prints a progress line (sequences, tokens/s, ETA) on stderr. Throws flextron::Error for bad
// input (no tokenizer, seq_len beyond the context, text too short for one window).
RankModelResult rank_model_dir(const RankModelOptions& options);

}  // namespace flextron::train
