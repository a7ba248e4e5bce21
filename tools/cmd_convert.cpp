// flextron convert: rank -> elastic training -> profile -> routers -> joint fine-tune, each stage
// cached in --out (see pipeline/convert.h).
#include "commands.h"
#include "corpus_options.h"
#include "core/parse.h"
#include "number_options.h"
#include "pipeline/convert.h"
#include "route/router_pipeline.h"

namespace flextron::cli {

void register_convert(CLI::App& app) {
  auto o = std::make_shared<pipeline::ConvertOptions>();
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto budgets = std::make_shared<std::string>("auto");
  auto contexts = std::make_shared<std::string>("128,512");
  auto data = std::make_shared<std::vector<std::string>>();
  auto val = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand(
      "convert",
      "Trained LLM -> Flextron model: rank, elastic training, profile, routers, joint fine-tune "
      "(each stage cached in --out; rerun to resume)");
  cmd->add_option("--model", *model, "Trained base model directory")->required();
  auto prompts = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--data", *data,
                  "Training text files (the first is also the calibration text); with "
                  "--self-distill, text to mix with the sampled corpus")
      ->expected(1, -1);
  cmd->add_option("--self-distill", o->self_distill.tokens,
                  "Sample this many tokens of the base's own text and distill from the base on "
                  "them (KL): conversion without the original training data")
      ->check(positive());
  add_corpus_sampling_options(cmd, o->self_distill, *prompts, "sample-");
  cmd->add_option("--val", *val, "Held-out text files (default: 5% of --data's blocks)")
      ->expected(1, -1);
  cmd->add_option("--out", *out, "Output directory: the Flextron model, stages/ and convert.json")
      ->required();
  auto* tokens = cmd->add_option("--tokens", o->tokens, "Training token budget (elastic + joint)")
                     ->check(positive());
  auto* fraction =
      cmd->add_option("--token-fraction", o->token_fraction,
                      "Budget as a fraction of the base's pretraining tokens (its training.json)")
          ->check(positive())
          ->capture_default_str();
  tokens->excludes(fraction);
  cmd->add_option("--joint-share", o->joint_share,
                  "Share of the budget for the joint fine-tune (0: skip that stage)")
      ->capture_default_str();
  cmd->add_option("--budgets", *budgets,
                  "Latency fractions the routers are trained for, or auto: six from the smallest "
                  "reachable on this machine to 1")
      ->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence")
      ->check(in_range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per elastic-training step")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--router-batch", o->router_batch, "Sequences per router / joint step")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--sampling", o->sampling, "Elastic training: random or sandwich")
      ->check(CLI::IsMember({"random", "sandwich"}))
      ->capture_default_str();
  cmd->add_option("--rank-samples", o->rank_samples, "Calibration sequences for ranking")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--contexts", *contexts, "Profiled decode context lengths")
      ->capture_default_str();
  cmd->add_option("--profile-repeats", o->profile.repeats, "Timed runs per latency entry")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--profile-check", o->profile_check,
                  "Random architectures measured against the latency table")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--router-steps", o->router_steps, "Static router steps")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--sm-samples", o->surrogate_samples, "Architectures measured for the surrogate")
      ->check(in_range(8, 100000))
      ->capture_default_str();
  cmd->add_option("--dynamic-steps", o->dynamic_steps, "Dynamic router steps")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0 = LibTorch default)")
      ->check(non_negative());
  cmd->add_option("--stop-after-stage", o->stop_after_stage,
                  "Return after N stages as if killed (for testing resume)")
      ->check(positive())
      ->group("");
  cmd->callback([=] {
    o->model = *model;
    o->out = *out;
    if (*budgets != "auto") o->budgets = route::parse_budget_list(*budgets, "--budgets");
    o->profile.contexts = parse_int_list(*contexts, "--contexts");
    o->data.assign(data->begin(), data->end());
    o->self_distill.prompts.assign(prompts->begin(), prompts->end());
    o->val.assign(val->begin(), val->end());
    pipeline::convert(*o);
  });
}

}  // namespace flextron::cli
