// The parts every training run shares (pretraining, elastic training): loading the token data
// with its validation split, AdamW with the usual parameter groups, validation loss at an
// architecture, and the step loop itself (schedule, gradient clipping, progress, evaluation,
// atomic checkpoints, exact resume, and data-parallel gradient averaging).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include <torch/optim/adamw.h>
#include <nlohmann/json.hpp>

#include "model/transformer.h"
#include "train/distributed.h"
#include "train/token_dataset.h"

namespace flextron::train {

struct TrainingData {
  std::unique_ptr<TokenDataset> train;
  std::unique_ptr<TokenDataset> val;  // null: validation blocks are split off `train`
  Split split;
  std::vector<int64_t> val_windows;
  const TokenDataset& val_source() const { return val ? *val : *train; }
};

// Tokenizes (or reuses the cache in cache_dir) and splits: without val files, a seeded 5% of
// blocks of max(4096, 8 * (seq_len + 1)) tokens is held out. Throws flextron::Error for a
// missing, empty or non-UTF-8 file.
TrainingData load_training_data(const std::vector<std::filesystem::path>& files,
                                const std::vector<std::filesystem::path>& val_files,
                                const text::Tokenizer& tokenizer,
                                const std::filesystem::path& tokenizer_file,
                                const std::filesystem::path& cache_dir, int64_t seq_len,
                                int64_t eval_windows, uint64_t seed);

// AdamW (betas 0.9/0.95) with weight decay on everything but the norms (scales, not features).
std::unique_ptr<torch::optim::AdamW> make_adamw(model::TransformerImpl& model, double lr,
                                                double weight_decay);

// Mean next-token cross-entropy over fixed windows at `arch` (empty: full), without gradients.
double validation_loss(model::TransformerImpl& model, const TokenDataset& data,
                       const std::vector<int64_t>& windows, int64_t seq_len, int64_t batch,
                       const model::Architecture& arch = {}, model::LayerRouter* router = nullptr);

struct LoopSettings {
  std::filesystem::path out;  // checkpoints and train_log.jsonl go here
  int64_t total_steps = 0;
  int64_t tokens_per_step = 0;  // global, over all processes
  double peak_lr = 1e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 1;
  double grad_clip = 1.0;
  int64_t checkpoint_every = 1;
  int64_t eval_every = 1;
  int64_t stop_after_steps = 0;  // testing aid: return after this many steps, as if killed
  bool resume = false;
  // Settings that must match for --resume to continue a checkpoint (preset, seed, budget...).
  nlohmann::json identity;
};

struct LoopHooks {
  // Forward and backward of step `step` on this process's share (gradients accumulate into the
  // parameters; the loop zeroes them before). Returns the loss to report.
  std::function<double(int64_t step)> accumulate_gradients;
  // Validation after step `step` (1-based count of steps done): fields for the log, including
  // "val_loss". Called on rank 0 only (it needs no other rank).
  std::function<nlohmann::json(int64_t step)> evaluate;
};

struct LoopResult {
  int64_t steps = 0;  // steps done in total (including those before a resume)
  double final_train_loss = 0.0;
  nlohmann::json final_eval;
  double tokens_per_second = 0.0;
  bool completed = false;
};

// Checks --resume against the output directory, restores the checkpoint if resuming, and runs
// steps until the end (or stop_after_steps). With `parallel`, gradients are averaged across
// processes before clipping and only rank 0 prints, logs and writes checkpoints.
LoopResult run_training_loop(model::TransformerImpl& model, torch::optim::AdamW& optimizer,
                             const LoopSettings& settings, const LoopHooks& hooks,
                             DataParallel* parallel = nullptr);

// Fails naming `out` if it holds a checkpoint and `resume` is false, or none and it is true.
void check_resume(const std::filesystem::path& out, bool resume);

}  // namespace flextron::train
