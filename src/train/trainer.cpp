#include "train/trainer.h"

#include <cmath>
#include <cstdio>

#include <torch/torch.h>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/progress.h"
#include "train/schedule.h"

namespace flextron::train {

namespace fs = std::filesystem;

TrainingData load_training_data(const std::vector<fs::path>& files,
                                const std::vector<fs::path>& val_files,
                                const text::Tokenizer& tokenizer, const fs::path& tokenizer_file,
                                const fs::path& cache_dir, int64_t seq_len, int64_t eval_windows,
                                uint64_t seed) {
  if (files.empty()) fail("--data", "at least one text file is required");
  TrainingData d;
  d.train = std::make_unique<TokenDataset>(
      TokenDataset::build(files, tokenizer, tokenizer_file, cache_dir));
  if (val_files.empty()) {
    d.split = split_blocks(d.train->size(), std::max<int64_t>(4096, 8 * (seq_len + 1)), 0.05, seed);
  } else {
    d.split.train = {{0, d.train->size()}};
    d.val = std::make_unique<TokenDataset>(
        TokenDataset::build(val_files, tokenizer, tokenizer_file, cache_dir));
    d.split.validation = {{0, d.val->size()}};
  }
  d.val_windows = validation_windows(d.split.validation, seq_len, eval_windows);
  if (d.val_windows.empty())
    fail(val_files.empty() ? "--data" : "--val",
         "too little text for one validation window of " + std::to_string(seq_len + 1) +
             " tokens (" + std::to_string(d.val ? d.val->size() : d.train->size()) +
             " tokens in all); give more text or a --val file");
  return d;
}

std::unique_ptr<torch::optim::AdamW> make_adamw(model::TransformerImpl& model, double lr,
                                                double weight_decay) {
  std::vector<torch::Tensor> decay, no_decay;
  // Only matrices decay (as in GPT-2's and nanoGPT's recipes): not norms, not biases.
  for (auto& item : model.named_parameters())
    (item.value().dim() < 2 ? no_decay : decay).push_back(item.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decay, std::make_unique<torch::optim::AdamWOptions>(
                 torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(weight_decay)));
  groups.emplace_back(no_decay,
                      std::make_unique<torch::optim::AdamWOptions>(
                          torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(std::move(groups));
}

double validation_loss(model::TransformerImpl& m, const TokenDataset& data,
                       const std::vector<int64_t>& windows, int64_t seq_len, int64_t batch,
                       const model::Architecture& arch, model::LayerRouter* router) {
  torch::NoGradGuard no_grad;
  const bool was_training = m.is_training();
  m.eval();
  double total = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < windows.size(); i += static_cast<size_t>(batch)) {
    const int64_t b = std::min<int64_t>(batch, static_cast<int64_t>(windows.size() - i));
    auto x = torch::empty({b, seq_len}, torch::kLong), y = torch::empty({b, seq_len}, torch::kLong);
    for (int64_t k = 0; k < b; ++k) {
      auto w = data.slice(windows[i + static_cast<size_t>(k)], seq_len + 1);
      x[k].copy_(w.narrow(0, 0, seq_len));
      y[k].copy_(w.narrow(0, 1, seq_len));
    }
    auto logits = m.forward(x.to(m.device()), nullptr, &arch, router);
    total +=
        torch::nn::functional::cross_entropy(
            logits.reshape({-1, logits.size(-1)}).to(torch::kFloat), y.to(m.device()).reshape({-1}),
            torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    count += b * seq_len;
  }
  m.train(was_training);
  return count > 0 ? total / static_cast<double>(count) : std::nan("");
}

void check_resume(const fs::path& out, bool resume) {
  if (fs::exists(out) && !fs::is_directory(out))
    fail(out.string(), "exists and is not a directory");
  const auto checkpoint = find_checkpoint(out);
  if (resume && !checkpoint) fail(out.string(), "--resume: no checkpoint in this directory");
  if (!resume && checkpoint)
    fail(out.string(),
         "holds a checkpoint of an earlier run: pass --resume to continue it, or use another "
         "--out");
}

LoopResult run_training_loop(model::TransformerImpl& m, torch::optim::AdamW& optimizer,
                             const LoopSettings& s, const LoopHooks& hooks,
                             DataParallel* parallel) {
  const bool main_process = parallel == nullptr || parallel->is_main();
  int64_t start_step = 0;
  if (s.resume) {
    const auto checkpoint = find_checkpoint(s.out);
    if (!checkpoint) fail(s.out.string(), "--resume: no checkpoint in this directory");
    auto state = load_checkpoint(*checkpoint, m, optimizer);
    for (const auto& [key, value] : s.identity.items())
      if (!state.contains(key) || state[key] != value)
        fail(checkpoint->string(), "--resume with a different " + key + " (checkpoint: " +
                                       (state.contains(key) ? state[key].dump() : "none") +
                                       ", now: " + value.dump() + ")");
    start_step = state["step"].get<int64_t>();
    if (main_process)
      std::fprintf(stderr, "resuming from %s at step %lld\n", checkpoint->string().c_str(),
                   static_cast<long long>(start_step));
  }
  std::unique_ptr<Progress> progress;
  if (main_process)
    progress = std::make_unique<Progress>(s.out / "train_log.jsonl", s.total_steps,
                                          s.tokens_per_step, start_step);
  const auto params = m.parameters();
  m.train();
  LoopResult result;
  const auto started = std::chrono::steady_clock::now();
  for (int64_t step = start_step; step < s.total_steps; ++step) {
    const double lr = cosine_lr(step, s.total_steps, s.warmup_steps, s.peak_lr, s.min_lr_ratio);
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    double loss = hooks.accumulate_gradients(step);
    if (parallel != nullptr) {
      parallel->average_gradients(params);
      loss = parallel->average(loss);
    }
    if (!std::isfinite(loss))
      fail("training",
           "loss became " + std::to_string(loss) + " at step " + std::to_string(step + 1));
    const double grad_norm = torch::nn::utils::clip_grad_norm_(params, s.grad_clip);
    optimizer.step();
    result.final_train_loss = loss;
    if (progress) progress->step(step, loss, lr, grad_norm);
    const bool last = step + 1 == s.total_steps;
    if (((step + 1) % s.eval_every == 0 || last) && main_process) {
      result.final_eval = hooks.evaluate(step + 1);
      result.final_eval["step"] = step + 1;
      if (progress) progress->event("eval", result.final_eval);
    }
    if ((step + 1) % s.checkpoint_every == 0 && !last && main_process) {
      auto state = s.identity;
      state["step"] = step + 1;
      state["tokens"] = (step + 1) * s.tokens_per_step;
      save_checkpoint(s.out, m, optimizer, state);
    }
    if (s.stop_after_steps > 0 && step + 1 - start_step >= s.stop_after_steps && !last) {
      if (main_process)
        std::fprintf(stderr, "stopping after %lld steps as asked (--stop-after-steps)\n",
                     static_cast<long long>(s.stop_after_steps));
      if (parallel != nullptr) parallel->barrier();  // the checkpoint is complete for everyone
      result.steps = step + 1;
      return result;
    }
  }
  result.steps = s.total_steps;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  result.tokens_per_second = static_cast<double>((s.total_steps - start_step) * s.tokens_per_step) /
                             std::max(1e-9, seconds);
  result.completed = true;
  m.eval();
  return result;
}

}  // namespace flextron::train
