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
#include "text/chat_template.h"
#include "text/sentencepiece_trainer.h"
#include "train/presets.h"
#include "train/trainer.h"

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
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.zero_();  // GPT-2's projection biases start at 0
      continue;
    }
    const bool residual =
        name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos;
    p.normal_(0.0, residual ? residual_std : 0.02);
  }
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
  model::ModelConfig config = o.config.empty() ? preset.config : model::load_config(o.config);
  if (!o.family.empty()) {
    const auto family = model::parse_family(o.family, "--family");
    if (!o.config.empty() && family != config.family)
      fail("--family", o.family + " disagrees with " + o.config.string() + ", a " +
                           model::family_name(config.family) + " config");
    if (family == model::Family::Gpt2 && o.config.empty()) config = model::gpt2_variant(config);
  }
  check_resume(o.out, o.resume);
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
  if (!o.config.empty() && config.vocab_size != tokenizer->vocab_size())
    fail(o.config.string(), "vocab_size " + std::to_string(config.vocab_size) +
                                " differs from the tokenizer's " +
                                std::to_string(tokenizer->vocab_size()));
  config.vocab_size = tokenizer->vocab_size();
  config.bos_token_id = tokenizer->bos_id();
  config.eos_token_id = tokenizer->eos_id();

  const auto data = load_training_data(o.data, o.val, *tokenizer, tokenizer_file, o.out / "cache",
                                       preset.seq_len, o.eval_windows, o.seed);

  torch::manual_seed(o.seed);
  model::Transformer m(config);
  init_weights(*m);
  m->train();
  auto optimizer = make_adamw(*m, preset.lr, preset.weight_decay);
  std::fprintf(stderr,
               "pretraining preset %s: %lld parameters, %lld steps x %lld tokens = %lld tokens, %d "
               "threads\n",
               preset.name.c_str(), static_cast<long long>(m->parameter_count()),
               static_cast<long long>(total_steps), static_cast<long long>(per_step),
               static_cast<long long>(total_steps) * per_step, threads);

  LoopSettings loop;
  loop.out = o.out;
  loop.total_steps = total_steps;
  loop.tokens_per_step = per_step;
  loop.peak_lr = preset.lr;
  loop.min_lr_ratio = preset.min_lr_ratio;
  loop.warmup_steps = warmup;
  loop.grad_clip = preset.grad_clip;
  loop.checkpoint_every = checkpoint_every;
  loop.eval_every = eval_every;
  loop.stop_after_steps = o.stop_after_steps;
  loop.resume = o.resume;
  loop.identity = {{"kind", "pretrain"},
                   {"preset", preset.name},
                   {"family", model::family_name(config.family)},
                   {"seed", o.seed},
                   {"total_steps", total_steps}};
  LoopHooks hooks;
  hooks.accumulate_gradients = [&](int64_t step) {
    double loss_value = 0.0;
    for (int64_t micro = 0; micro < preset.grad_accumulation; ++micro) {
      auto batch = sample_batch(*data.train, data.split.train, preset.micro_batch, preset.seq_len,
                                o.seed, step * preset.grad_accumulation + micro);
      auto logits = m->forward(batch.inputs.to(m->device()));
      auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                       batch.targets.to(m->device()).reshape({-1}));
      (loss / static_cast<double>(preset.grad_accumulation)).backward();
      loss_value += loss.item<double>() / static_cast<double>(preset.grad_accumulation);
    }
    return loss_value;
  };
  hooks.evaluate = [&](int64_t) {
    return nlohmann::json{{"val_loss", validation_loss(*m, data.val_source(), data.val_windows,
                                                       preset.seq_len, preset.micro_batch)}};
  };
  const auto loop_result = run_training_loop(*m, *optimizer, loop, hooks);
  PretrainResult result;
  result.steps = loop_result.steps;
  if (!loop_result.completed) return result;
  result.steps = total_steps;
  result.tokens = total_steps * per_step;
  result.final_train_loss = loop_result.final_train_loss;
  result.final_val_loss = loop_result.final_eval.value("val_loss", std::nan(""));
  result.tokens_per_second = loop_result.tokens_per_second;
  result.completed = true;

  io::save_model_dir(o.out, *m, tokenizer.get());
  // Our chat format, as Jinja beside the weights: what `serve` renders for this model, for
  // other engines to render the same.
  if (tokenizer->chat_template().empty())
    io::write_text_atomically(o.out / "chat_template.jinja", text::flextron_chat_template());
  nlohmann::json training = {{"kind", "pretrain"},
                             {"preset", preset.name},
                             {"family", model::family_name(config.family)},
                             {"tokens", result.tokens},
                             {"steps", total_steps},
                             {"tokens_per_step", per_step},
                             {"config", o.config.string()},
                             {"seed", o.seed},
                             {"peak_lr", preset.lr},
                             {"final_train_loss", result.final_train_loss},
                             {"final_val_loss", result.final_val_loss},
                             {"tokens_per_second", result.tokens_per_second},
                             {"data", data.train->manifest()}};
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
