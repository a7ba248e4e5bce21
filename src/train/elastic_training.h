// Elastic continued training (FLEXTRON.md section 3): train a ranked model so that every
// architecture of its elastic space is good, by sampling architectures per step.
//   sampling "random":   the full model with probability p_full, else an independent uniform
//                        choice per layer from the space;
//   sampling "sandwich": full + smallest + one random architecture, gradients summed.
// Loss per sampled architecture: cross-entropy, or with distillation
//   w * KL(teacher || student) + (1 - w) * cross-entropy,
// where the frozen teacher's logits are computed once per batch and reused by every
// architecture of the step.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "model/elastic_space.h"

namespace flextron::train {

enum class ArchSampling { Random, Sandwich };
ArchSampling parse_arch_sampling(const std::string& name);  // "random" or "sandwich"

// The architectures of training step `step`: a function of (seed, step) only, so every
// data-parallel rank and a resumed run draw the same ones.
std::vector<model::Architecture> sample_architectures(const model::ElasticSpace& space,
                                                      ArchSampling sampling, double p_full,
                                                      uint64_t seed, int64_t step);

// The architectures whose validation loss is logged: smallest, uniform ~50%, full.
struct ProbeArchitecture {
  std::string name;
  model::Architecture arch;
};
std::vector<ProbeArchitecture> probe_architectures(const model::ElasticSpace& space);

// Mean over positions of KL(softmax(teacher) || softmax(student)), in float32 or wider.
// logits: [..., vocab], same shapes.
torch::Tensor distillation_loss(const torch::Tensor& student_logits,
                                const torch::Tensor& teacher_logits);

// The pretraining token count a training.json records for the base model: an elastic model's
// "base_pretraining_tokens", else a pretrained model's own "tokens"; 0 when it records neither.
int64_t base_pretraining_tokens(const nlohmann::json& training);

struct ElasticTrainOptions {
  std::filesystem::path model;  // ranked model directory (its own training.json, if any, gives
                                // the pretraining budget for token_fraction)
  std::vector<std::filesystem::path> data;
  std::vector<std::filesystem::path> val;
  std::filesystem::path out;
  int64_t tokens = 0;           // budget; or
  double token_fraction = 0.0;  // fraction of the base model's pretraining tokens (0, 10]
  ArchSampling sampling = ArchSampling::Random;
  double p_full = 1.0 / 3.0;
  bool distill = false;
  std::filesystem::path teacher;  // default: the starting model itself
  double distill_weight = 0.5;
  int64_t seq_len = 256;
  int64_t batch = 8;  // global sequences per step (split across data-parallel ranks)
  double lr = 3e-4;   // peak; warm-up 5% then cosine to 10%
  double weight_decay = 0.1;
  uint64_t seed = 1234;
  int64_t checkpoint_every = 0;  // steps; 0: about every 10% of the run
  int64_t eval_every = 0;
  int64_t eval_windows = 16;
  bool resume = false;
  int threads = 0;
  torch::Dtype dtype = torch::kFloat;  // of weights, optimizer state and activations
  int64_t stop_after_steps = 0;
};

struct ElasticTrainResult {
  int64_t steps = 0;
  int64_t tokens = 0;
  double tokens_per_second = 0.0;
  bool completed = false;
};

// Writes the trained model directory (with flextron.json and training.json) to options.out.
// Runs data-parallel when WORLD_SIZE > 1 (see train/distributed.h). Throws flextron::Error
// for bad input.
ElasticTrainResult train_elastic(const ElasticTrainOptions& options);

}  // namespace flextron::train
