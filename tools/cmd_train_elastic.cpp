// flextron train-elastic: continue training a ranked model so every sub-network of its elastic
// space is good (run it under `flextron launch` for data parallelism).
#include "commands.h"
#include "number_options.h"
#include "train/elastic_training.h"

namespace flextron::cli {

void register_train_elastic(CLI::App& app) {
  auto o = std::make_shared<train::ElasticTrainOptions>();
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto teacher = std::make_shared<std::string>();
  auto sampling = std::make_shared<std::string>("random");
  auto dtype = std::make_shared<std::string>("f32");
  auto data = std::make_shared<std::vector<std::string>>();
  auto val = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand(
      "train-elastic", "Elastic continued training of a ranked model (all sub-networks at once)");
  cmd->add_option("--model", *model, "Ranked model directory")->required();
  cmd->add_option("--data", *data, "Training text files")->required()->expected(1, -1);
  cmd->add_option("--val", *val, "Validation text files (default: 5% of --data's blocks)")
      ->expected(1, -1);
  cmd->add_option("--out", *out, "Output model directory")->required();
  auto* tokens = cmd->add_option("--tokens", o->tokens, "Token budget")->check(positive());
  auto* fraction = cmd->add_option("--token-fraction", o->token_fraction,
                                   "Budget as a fraction of the base model's pretraining tokens "
                                   "(its training.json), e.g. 0.0763")
                       ->check(positive());
  tokens->excludes(fraction);
  cmd->add_option("--sampling", *sampling,
                  "random (full with --p-full, else random per layer) or sandwich "
                  "(full + smallest + random)")
      ->capture_default_str();
  cmd->add_option("--p-full", o->p_full, "Probability of the full model per step")
      ->check(in_range(0, 1))
      ->capture_default_str();
  cmd->add_flag("--distill", o->distill, "Add KL to a frozen teacher's logits");
  cmd->add_option("--teacher", *teacher, "Teacher model directory (default: --model)");
  cmd->add_option("--distill-weight", o->distill_weight, "Loss = w * KL + (1 - w) * cross-entropy")
      ->check(in_range(0, 1))
      ->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence")
      ->check(in_range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per step, over all processes")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--lr", o->lr, "Peak learning rate (warm-up 5%, cosine to 10%)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for data order, split and architecture sampling")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "Steps between checkpoints (default: 10% of the run)")
      ->check(positive());
  cmd->add_option("--eval-every", o->eval_every,
                  "Steps between validation of the probe architectures (default: 10%)")
      ->check(positive());
  cmd->add_option("--dtype", *dtype, "Training precision: f32, bf16 or f64")
      ->check(CLI::IsMember({"f32", "bf16", "f64"}))
      ->capture_default_str();
  cmd->add_flag("--resume", o->resume, "Continue the run whose checkpoint is in --out");
  cmd->add_option("--threads", o->threads,
                  "CPU threads per process (0 = LibTorch default: one per physical core)")
      ->check(non_negative());
  cmd->add_option("--stop-after-steps", o->stop_after_steps,
                  "Stop after N steps as if killed (for testing resume)")
      ->check(positive())
      ->group("");
  cmd->callback([=] {
    o->model = *model;
    o->out = *out;
    o->teacher = *teacher;
    o->sampling = train::parse_arch_sampling(*sampling);
    o->dtype = *dtype == "f64"    ? torch::kDouble
               : *dtype == "bf16" ? torch::kBFloat16
                                  : torch::kFloat;
    o->data.assign(data->begin(), data->end());
    o->val.assign(val->begin(), val->end());
    train::train_elastic(*o);
  });
}

}  // namespace flextron::cli
