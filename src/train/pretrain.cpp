#include "train/pretrain.h"

#include <cmath>
#include <cstdio>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "model/transformer.h"
#include "runtime/threads.h"
#include "text/sentencepiece_trainer.h"
#include "train/checkpoint.h"
#include "train/presets.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/token_dataset.h"

namespace flextron::train {

namespace fs = std::filesystem;

namespace {

// GPT-2 style initialisation: N(0, 0.02) everywhere, residual output projections scaled by
// 1/sqrt(2 * layers) so the residual stream's variance does not grow with depth.
void init_weights(model::TransformerImpl& m) {
  torch::NoGradGuard no_grad;
  const double residual_std =
      0.02 / std::sqrt(2.0 * static_cast<double>(m.config().num_hidden_layers));
  for (auto& item : m.named_parameters()) {
    const auto& name = item.key();
    auto& p = item.value();
    if (name.find("norm") != std::string::npos) continue;  // norm weights stay at 1
    const bool residual =
        name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
    p.normal_(0.0, residual ? residual_std : 0.02);
  }
}

// Mean next-token cross-entropy over fixed validation windows, without gradients.
double validation_loss(model::TransformerImpl& m, const TokenDataset& data,
                       const std::vector<int64_t>& windows, int64_t seq_len, int64_t batch) {
  torch::NoGradGuard no_grad;
  m.eval();
  double total = 0.0;
  int64_t count = 0;
  for (size_t i = 0; i < windows.size(); i += batch) {
    const int64_t b = std::min<int64_t>(batch, static_cast<int64_t>(windows.size() - i));
    auto x = torch::empty({b, seq_len}, torch::kLong), y = torch::empty({b, seq_len}, torch::kLong);
    for (int64_t k = 0; k < b; ++k) {
      auto w = data.slice(windows[i + k], seq_len + 1);
      x[k].copy_(w.narrow(0, 0, seq_len));
      y[k].copy_(w.narrow(0, 1, seq_len));
    }
    auto logits = m.forward(x.to(m.device()));
    total += torch::nn::functional::cross_entropy(
                 logits.reshape({-1, logits.size(-1)}), y.to(m.device()).reshape({-1}),
                 torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                 .item<double>();
    count += b * seq_len;
  }
  m.train();
  return count > 0 ? total / static_cast<double>(count) : std::nan("");
}

}  // namespace

PretrainResult pretrain(const PretrainOptions& o) {
  const Preset& preset = find_preset(o.preset);
  if (o.out.empty()) fail("--out", "an output directory is required");
  const int threads = runtime::use_threads(o.threads);
  const int64_t tokens = o.tokens > 0 ? o.tokens : preset.default_tokens;
  const int64_t per_step = preset.tokens_per_step();
  if (tokens < per_step)
    fail("--tokens", "budget of " + std::to_string(tokens) + " tokens is smaller than one batch (" +
                         std::to_string(per_step) + " tokens for preset " + preset.name + ")");
  const int64_t total_steps = tokens / per_step;
  const int64_t warmup =
      std::max<int64_t>(1, static_cast<int64_t>(preset.warmup_fraction * total_steps));
  const int64_t checkpoint_every =
      o.checkpoint_every > 0 ? o.checkpoint_every : std::max<int64_t>(1, total_steps / 10);
  const int64_t eval_every =
      o.eval_every > 0 ? o.eval_every : std::max<int64_t>(1, total_steps / 10);
  for (const auto& f : o.data)
    if (!fs::is_regular_file(f))
      fail(f.string(),
           fs::is_directory(f) ? "is a directory, expected a text file" : "no such file");
  if (o.data.empty()) fail("--data", "at least one text file is required");
  if (fs::exists(o.out) && !fs::is_directory(o.out))
    fail(o.out.string(), "exists and is not a directory");
  const auto checkpoint = find_checkpoint(o.out);
  if (o.resume && !checkpoint) fail(o.out.string(), "--resume: no checkpoint in this directory");
  if (!o.resume && checkpoint)
    fail(
        o.out.string(),
        "holds a checkpoint of an earlier run: pass --resume to continue it, or use another --out");
  fs::create_directories(o.out);

  // Tokenizer: given, kept from the run being resumed, or trained on the data.
  fs::path tokenizer_file = o.tokenizer;
  if (tokenizer_file.empty()) {
    tokenizer_file = o.out / "tokenizer.model";
    if (!fs::exists(tokenizer_file)) {
      std::fprintf(stderr, "training a %lld-piece SentencePiece BPE tokenizer on the data...\n",
                   static_cast<long long>(preset.config.vocab_size));
      text::TokenizerTrainOptions t;
      t.vocab_size = preset.config.vocab_size;
      t.threads = threads;
      text::train_sentencepiece(o.data, o.out, t);
    }
  }
  auto tokenizer = tokenizer_file.extension() == ".bin"
                       ? text::load_llama2c_tokenizer(tokenizer_file, preset.config.vocab_size)
                       : text::load_sentencepiece_tokenizer(tokenizer_file);
  model::ModelConfig config = preset.config;
  config.vocab_size = tokenizer->vocab_size();
  config.bos_token_id = tokenizer->bos_id();
  config.eos_token_id = tokenizer->eos_id();

  const auto train_data = TokenDataset::build(o.data, *tokenizer, tokenizer_file, o.out / "cache");
  Split split;
  std::optional<TokenDataset> val_data;
  if (o.val.empty()) {
    split = split_blocks(train_data.size(), std::max<int64_t>(4096, 8 * (preset.seq_len + 1)), 0.05,
                         o.seed);
  } else {
    split.train = {{0, train_data.size()}};
    val_data = TokenDataset::build(o.val, *tokenizer, tokenizer_file, o.out / "cache");
    split.validation = {{0, val_data->size()}};
  }
  const TokenDataset& val_source = val_data ? *val_data : train_data;
  const auto val_windows = validation_windows(split.validation, preset.seq_len, o.eval_windows);

  torch::manual_seed(o.seed);
  model::Transformer m(config);
  init_weights(*m);
  m->train();
  // No weight decay on norms (they are scales, not features).
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& item : m->named_parameters())
    (item.key().find("norm") != std::string::npos ? no_decay : decay).push_back(item.value());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(preset.lr)
                                                              .betas({0.9, 0.95})
                                                              .weight_decay(preset.weight_decay)));
  groups.emplace_back(
      no_decay, std::make_unique<torch::optim::AdamWOptions>(
                    torch::optim::AdamWOptions(preset.lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups));

  int64_t start_step = 0;
  const std::string data_key = train_data.manifest().dump();
  if (o.resume) {
    auto state = load_checkpoint(*checkpoint, *m, optimizer);
    if (state.value("total_steps", int64_t{0}) != total_steps ||
        state.value("seed", uint64_t{0}) != o.seed ||
        state.value("preset", std::string()) != preset.name)
      fail(checkpoint->string(),
           "--resume with different settings (preset, --tokens or --seed) than the checkpoint's "
           "run");
    start_step = state["step"].get<int64_t>();
    std::fprintf(stderr, "resuming from %s at step %lld\n", checkpoint->string().c_str(),
                 static_cast<long long>(start_step));
  }

  std::fprintf(stderr,
               "pretraining preset %s: %lld parameters, %lld steps x %lld tokens = %lld tokens, %d "
               "threads\n",
               preset.name.c_str(), static_cast<long long>([&] {
                 int64_t n = 0;
                 for (auto& p : m->parameters()) n += p.numel();
                 return n;
               }()),
               static_cast<long long>(total_steps), static_cast<long long>(per_step),
               static_cast<long long>(total_steps * per_step), threads);
  Progress progress(o.out / "train_log.jsonl", total_steps, per_step, start_step);
  PretrainResult result;
  double loss_value = 0.0;
  for (int64_t step = start_step; step < total_steps; ++step) {
    const double lr = cosine_lr(step, total_steps, warmup, preset.lr, preset.min_lr_ratio);
    for (auto& group : optimizer.param_groups())
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    loss_value = 0.0;
    for (int64_t micro = 0; micro < preset.grad_accumulation; ++micro) {
      auto batch = sample_batch(train_data, split.train, preset.micro_batch, preset.seq_len, o.seed,
                                step * preset.grad_accumulation + micro);
      auto logits = m->forward(batch.inputs.to(m->device()));
      auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                       batch.targets.to(m->device()).reshape({-1}));
      (loss / static_cast<double>(preset.grad_accumulation)).backward();
      loss_value += loss.item<double>() / static_cast<double>(preset.grad_accumulation);
    }
    if (!std::isfinite(loss_value))
      fail("training",
           "loss became " + std::to_string(loss_value) + " at step " + std::to_string(step + 1));
    const double grad_norm = torch::nn::utils::clip_grad_norm_(m->parameters(), preset.grad_clip);
    optimizer.step();
    progress.step(step, loss_value, lr, grad_norm);
    const bool last = step + 1 == total_steps;
    if ((step + 1) % eval_every == 0 || last) {
      result.final_val_loss =
          validation_loss(*m, val_source, val_windows, preset.seq_len, preset.micro_batch);
      progress.event("eval", {{"step", step + 1}, {"val_loss", result.final_val_loss}});
    }
    if ((step + 1) % checkpoint_every == 0 && !last) {
      save_checkpoint(o.out, *m, optimizer,
                      {{"step", step + 1},
                       {"total_steps", total_steps},
                       {"seed", o.seed},
                       {"preset", preset.name},
                       {"tokens", (step + 1) * per_step}});
    }
    if (o.stop_after_steps > 0 && step + 1 - start_step >= o.stop_after_steps && !last) {
      std::fprintf(stderr, "stopping after %lld steps as asked (--stop-after-steps)\n",
                   static_cast<long long>(o.stop_after_steps));
      result.steps = step + 1;
      return result;
    }
  }
  result.steps = total_steps;
  result.tokens = total_steps * per_step;
  result.final_train_loss = loss_value;
  result.tokens_per_second = static_cast<double>((total_steps - start_step) * per_step) /
                             std::max(1e-9, progress.elapsed_seconds());
  result.completed = true;

  m->eval();
  io::save_model_dir(o.out, *m, tokenizer.get());
  nlohmann::json training = {{"kind", "pretrain"},
                             {"preset", preset.name},
                             {"tokens", result.tokens},
                             {"steps", total_steps},
                             {"tokens_per_step", per_step},
                             {"seed", o.seed},
                             {"peak_lr", preset.lr},
                             {"final_train_loss", result.final_train_loss},
                             {"final_val_loss", result.final_val_loss},
                             {"data", train_data.manifest()}};
  io::write_text_atomically(o.out / "training.json", training.dump(2) + "\n");
  fs::remove_all(o.out / "checkpoint");
  std::fprintf(
      stderr,
      "done: %lld tokens, final train loss %.4f, validation loss %.4f (ppl %.2f); model in %s\n",
      static_cast<long long>(result.tokens), result.final_train_loss, result.final_val_loss,
      std::exp(result.final_val_loss), o.out.string().c_str());
  return result;
}

}  // namespace flextron::train
