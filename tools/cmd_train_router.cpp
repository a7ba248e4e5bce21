// flextron train-router: surrogate model, static router, optionally the dynamic router and the
// joint fine-tune, and the cached budget table (see route/router_pipeline.h).
#include "commands.h"
#include "number_options.h"
#include "route/router_pipeline.h"

namespace flextron::cli {

void register_train_router(CLI::App& app) {
  auto o = std::make_shared<route::RouterPipelineOptions>();
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto latency = std::make_shared<std::string>();
  auto budgets = std::make_shared<std::string>("0.4,0.5,0.6,0.7,0.8,0.9,1.0");
  auto data = std::make_shared<std::vector<std::string>>();
  auto val = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand(
      "train-router", "Train the routers that turn a budget into widths (needs latency.json)");
  cmd->add_option("--model", *model, "Elastic model directory (with latency.json)")->required();
  cmd->add_option("--data", *data, "Training text files")->required()->expected(1, -1);
  cmd->add_option("--val", *val, "Held-out text files (default: 5% of --data's blocks)")
      ->expected(1, -1);
  cmd->add_option("--out", *out, "Output model directory")->required();
  cmd->add_option("--latency", *latency, "Latency table (default: MODEL/latency.json)");
  cmd->add_option("--budgets", *budgets, "Trained latency fractions, comma-separated")
      ->capture_default_str();
  cmd->add_option("--steps", o->router_steps, "Static router steps (against the surrogate)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--sm-samples", o->surrogate_samples,
                  "Architectures measured to fit the surrogate model")
      ->check(in_range(8, 100000))
      ->capture_default_str();
  cmd->add_option("--latency-weight", o->latency_weight, "lambda of the latency loss")
      ->check(positive())
      ->capture_default_str();
  cmd->add_flag("--dynamic", o->dynamic, "Also train the per-token dynamic router");
  cmd->add_option("--dynamic-steps", o->dynamic_steps, "Dynamic router steps (through the LLM)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_flag("--joint", o->joint, "Then fine-tune model and routers together");
  cmd->add_flag("--reuse", o->reuse,
                "Start from the routers already in --model (skip surrogate, static and dynamic "
                "training; e.g. to add --joint later)");
  cmd->add_option("--tokens", o->joint_tokens, "Token budget of the joint fine-tune")
      ->check(positive());
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence")
      ->check(in_range(2, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "Sequences per step")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--eval-windows", o->eval_windows, "Held-out windows per surrogate measurement")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0 = LibTorch default)")
      ->check(non_negative());
  cmd->callback([=] {
    o->model = *model;
    o->out = *out;
    o->latency = *latency;
    o->budgets = route::parse_budget_list(*budgets, "--budgets");
    o->data.assign(data->begin(), data->end());
    o->val.assign(val->begin(), val->end());
    route::train_routers(*o);
  });
}

}  // namespace flextron::cli
