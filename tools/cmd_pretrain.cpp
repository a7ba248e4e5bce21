// flextron pretrain: train a base model (Llama or GPT-2 family) from scratch on text files.
#include <iostream>

#include "commands.h"
#include "number_options.h"
#include "train/presets.h"
#include "train/pretrain.h"

namespace flextron::cli {

void register_pretrain(CLI::App& app) {
  auto o = std::make_shared<train::PretrainOptions>();
  auto data = std::make_shared<std::vector<std::string>>();
  auto val = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto tokenizer = std::make_shared<std::string>();
  std::string presets_help = "Model size:";
  for (const auto& p : train::presets()) presets_help += " " + p.name + " (" + p.description + ");";
  auto* cmd =
      app.add_subcommand("pretrain", "Pretrain a base model from scratch on UTF-8 text files");
  cmd->add_option("--data", *data, "Training text files")->required()->expected(1, -1);
  cmd->add_option("--val", *val, "Validation text files (default: 5% of --data's blocks)")
      ->expected(1, -1);
  cmd->add_option("--out", *out, "Output model directory")->required();
  cmd->add_option("--preset", o->preset, presets_help)->capture_default_str();
  cmd->add_option("--tokens", o->tokens, "Token budget (default: the preset's)")->check(positive());
  cmd->add_option("--family", o->family,
                  "llama (the presets' own) or gpt2: LayerNorm, GELU MLP of 4x width, learned "
                  "positions, biases, one KV head per head, at the preset's size")
      ->check(CLI::IsMember({"llama", "gpt2", "gpt"}));
  cmd->add_option("--seed", o->seed, "Seed for initialisation, data order and split")
      ->capture_default_str();
  cmd->add_option("--config", o->config,
                  "Model shape from this config.json (e.g. an extracted sub-network's) instead "
                  "of the preset's");
  cmd->add_option("--tokenizer", *tokenizer,
                  "Existing tokenizer.model / tokenizer.bin (default: train one)");
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "Steps between checkpoints (default: 10% of the run)")
      ->check(positive());
  cmd->add_option("--eval-every", o->eval_every,
                  "Steps between validation passes (default: 10% of the run)")
      ->check(positive());
  cmd->add_flag("--resume", o->resume, "Continue the run whose checkpoint is in --out");
  cmd->add_option("--threads", o->threads,
                  "CPU threads (0 = LibTorch default: one per physical core)")
      ->check(non_negative());
  cmd->add_option("--stop-after-steps", o->stop_after_steps,
                  "Stop after N steps as if killed (for testing resume)")
      ->check(positive())
      ->group("");  // hidden
  cmd->callback([=] {
    o->data.assign(data->begin(), data->end());
    o->val.assign(val->begin(), val->end());
    o->out = *out;
    o->tokenizer = *tokenizer;
    train::pretrain(*o);
  });
}

}  // namespace flextron::cli
