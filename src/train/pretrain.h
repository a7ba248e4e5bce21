// Pretraining a base model (Llama or GPT-2 family) from scratch: AdamW, warm-up + cosine schedule,
// gradient clipping and accumulation, validation at intervals, atomic checkpoints and exact resume.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace flextron::train {

struct PretrainOptions {
  std::vector<std::filesystem::path> data;
  std::vector<std::filesystem::path> val;  // empty: split off validation blocks from `data`
  std::filesystem::path out;
  std::string preset = "tiny";
  // "llama" or "gpt2": the GPT-2 variant of the preset's size (model::gpt2_variant). Empty: the
  // preset's (Llama) or --config's family.
  std::string family;
  int64_t tokens = 0;  // 0: the preset's default budget
  uint64_t seed = 1234;
  std::filesystem::path tokenizer;  // empty: train a SentencePiece BPE on `data`
  // Model shape from this config.json (e.g. an extracted sub-network's, for a from-scratch
  // baseline of the same shape) instead of the preset's; the preset still sets the optimisation.
  std::filesystem::path config;
  int64_t checkpoint_every = 0;  // steps; 0: about every 10% of the run
  int64_t eval_every = 0;        // steps; 0: about every 10% of the run
  int64_t eval_windows = 32;     // validation windows per evaluation
  bool resume = false;
  int threads = 0;               // 0: LibTorch default (one per physical core)
  int64_t stop_after_steps = 0;  // testing aid: exit after this many steps, as if killed
};

struct PretrainResult {
  int64_t steps = 0;
  int64_t tokens = 0;
  double final_train_loss = 0.0;
  double final_val_loss = 0.0;
  double tokens_per_second = 0.0;
  bool completed = false;  // false when stopped early by stop_after_steps
};

// Writes a model directory to options.out (config.json, model.safetensors, tokenizer,
// training.json, train_log.jsonl). Throws flextron::Error for bad input.
PretrainResult pretrain(const PretrainOptions& options);

}  // namespace flextron::train
