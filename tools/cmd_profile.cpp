// flextron profile: measure the latency lookup table of a model on this machine (latency.json),
// and check its predictions against end-to-end measurement of random architectures.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/parse.h"
#include "core/timing.h"
#include "device_options.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "route/budget_table.h"
#include "route/latency.h"
#include "train/progress.h"

namespace flextron::cli {

namespace {
struct ProfileArgs {
  std::string model;
  std::string out;  // default: model/latency.json
  std::string contexts = "128,512";
  route::ProfileOptions options;
  int64_t check = 20;
  DeviceArgs device;
};

void run_profile(const ProfileArgs& a) {
  auto load = a.device.load_options();
  load.with_tokenizer = false;
  auto loaded = io::load_model_dir(a.model, load);
  auto options = a.options;
  options.contexts = parse_int_list(a.contexts, "--contexts");
  const auto started = std::chrono::steady_clock::now();
  double last_print = -1.0;
  auto progress = [&](int64_t done, int64_t total) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (done < total && secs - last_print < 1.0) return;
    last_print = secs;
    std::fprintf(
        stderr, "\rprofile: %lld/%lld entries, %s elapsed, ETA %s   ", static_cast<long long>(done),
        static_cast<long long>(total), train::format_duration(secs).c_str(),
        train::format_duration(secs / static_cast<double>(done) * static_cast<double>(total - done))
            .c_str());
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto table = route::profile_latency(*loaded.model, loaded.space, options, progress);
  const auto& config = loaded.model->config();

  std::printf(
      "latency table of %s on %s (%d threads, %s, batch %lld)\n", a.model.c_str(),
      table.hardware["cpu"].get<std::string>().c_str(), table.hardware["threads"].get<int>(),
      table.hardware["device"].get<std::string>().c_str(), static_cast<long long>(table.batch));
  std::printf("%-10s %-16s %-16s %-10s %s\n", "context", "full ms/token", "narrowest", "fixed ms",
              "layer scale");
  const auto narrowest = model::narrowest_architecture(loaded.space);
  for (size_t i = 0; i < table.contexts.size(); ++i) {
    const int64_t c = table.contexts[i];
    std::printf("%-10lld %-16.4f %-16.4f %-10.4f %.3f\n", static_cast<long long>(c),
                table.decode_ms({}, c), table.decode_ms(narrowest, c), table.fixed_decode_ms[i],
                table.decode_scale[i]);
  }
  std::printf("prefill: %.4f ms/token full, %.4f narrowest; smallest latency fraction %.3f\n",
              table.prefill_ms_per_token({}), table.prefill_ms_per_token(narrowest),
              route::latency_fraction(table, narrowest));

  auto j = route::latency_table_to_json(table);
  if (a.check > 0) {
    const auto checks = route::check_latency_table(*loaded.model, table, loaded.space, a.check,
                                                   4321, options.warmup, options.repeats);
    std::vector<double> errors;
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& c : checks) {
      errors.push_back(c.relative_error());
      rows.push_back({{"architecture", model::describe_architecture(c.arch, config)},
                      {"context", c.context},
                      {"predicted_ms", c.predicted_ms},
                      {"measured_ms", c.measured_ms}});
    }
    const double med = median(errors);
    const double worst = *std::max_element(errors.begin(), errors.end());
    j["check"] = {
        {"architectures", rows}, {"median_relative_error", med}, {"max_relative_error", worst}};
    std::printf(
        "check: %zu random architectures, prediction vs measurement: median error %.1f%%, "
        "max %.1f%%\n",
        checks.size(), 100.0 * med, 100.0 * worst);
  }
  const std::string out =
      a.out.empty() ? (std::filesystem::path(a.model) / route::kLatencyFile).string() : a.out;
  io::write_text_atomically(out, j.dump(2) + "\n");
  std::printf("wrote %s\n", out.c_str());
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
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--prefill-tokens", a->options.prefill_tokens, "Prompt length timed for prefill")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--repeats", a->options.repeats, "Timed runs per entry (the median is kept)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--warmup", a->options.warmup, "Untimed runs before each entry")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--check", a->check,
                  "Random architectures measured end to end against the table (0: none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  a->device.add_to(cmd);
  cmd->callback([a] { run_profile(*a); });
}

}  // namespace flextron::cli
