// flextron profile: measure the latency lookup table of a model on this machine (latency.json),
// and check its predictions against end-to-end measurement of random architectures.

#include "commands.h"
#include "core/parse.h"
#include "device_options.h"
#include "number_options.h"
#include "route/profile_model.h"

namespace flextron::cli {

namespace {
struct ProfileArgs {
  std::string model;
  std::string out;  // default: model/latency.json
  std::string contexts = "128,512";
  route::ProfileOptions options;
  int64_t check = 20;
  std::string runtime = "auto";
  std::string quant = "auto";
  DeviceArgs device;
};

void run_profile(const ProfileArgs& a) {
  route::ProfileModelOptions o;
  o.model = a.model;
  o.out = a.out;
  o.profile = a.options;
  o.profile.contexts = parse_int_list(a.contexts, "--contexts");
  o.check = a.check;
  o.runtime = a.runtime;
  o.quant = a.quant;
  o.load = a.device.load_options();
  route::profile_model_dir(o);
}
}  // namespace

void register_profile(CLI::App& app) {
  auto a = std::make_shared<ProfileArgs>();
  auto* cmd = app.add_subcommand(
      "profile", "Measure the latency lookup table (every layer at every width) -> latency.json");
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--out", a->out, "Output file (default: MODEL/latency.json)");
  cmd->add_option("--contexts", a->contexts, "Decode context lengths, comma-separated")
      ->capture_default_str();
  cmd->add_option("--batch", a->options.batch, "Sequences per decode step")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--prefill-tokens", a->options.prefill_tokens, "Prompt length timed for prefill")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--repeats", a->options.repeats, "Timed runs per entry (the median is kept)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--rounds", a->options.rounds,
                  "Whole-forward measurements in interleaved rounds (the median is kept)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--warmup", a->options.warmup, "Untimed runs before each entry")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--check", a->check,
                  "Random architectures measured end to end against the table (0: none)")
      ->check(non_negative())
      ->capture_default_str();
  a->device.add_to(cmd);
  add_runtime_option(cmd, a->runtime);
  add_quant_option(cmd, a->quant);
  cmd->callback([a] { run_profile(*a); });
}

}  // namespace flextron::cli
