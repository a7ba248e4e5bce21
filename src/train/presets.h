// Named model sizes for pretraining from scratch, with the optimisation settings that go with
// them. Parameter counts assume the preset's own vocabulary size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace flextron::train {

struct Preset {
  std::string name;
  std::string description;
  model::ModelConfig config;
  int64_t seq_len = 128;
  int64_t micro_batch = 16;  // sequences per forward/backward
  int64_t grad_accumulation = 1;
  double lr = 1e-3;           // peak learning rate
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  double warmup_fraction = 0.05;
  double weight_decay = 0.1;
  double grad_clip = 1.0;
  int64_t default_tokens = 0;  // token budget when --tokens is not given

  int64_t tokens_per_step() const { return seq_len * micro_batch * grad_accumulation; }
};

const std::vector<Preset>& presets();
// Throws flextron::Error listing the known names if `name` is not one.
const Preset& find_preset(const std::string& name);

}  // namespace flextron::train
