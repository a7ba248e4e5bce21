#include "route/profile_model.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include <torch/torch.h>

#include "core/error.h"
#include "core/progress_line.h"
#include "core/timing.h"
#include "io/atomic_file.h"
#include "route/budget_table.h"
#include "runtime/engine_timing.h"
#include "runtime/fast_generate.h"
#include "train/progress.h"

namespace flextron::route {

nlohmann::json profile_model_dir(const ProfileModelOptions& a) {
  auto load = a.load;
  load.with_tokenizer = false;
  auto loaded = io::load_model_dir(a.model, load);
  const auto& options = a.profile;
  const auto started = std::chrono::steady_clock::now();
  ProgressLine line;
  auto progress = [&](int64_t done, int64_t total) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    line.updatef(
        "profile: %lld/%lld entries, %s elapsed, ETA %s", static_cast<long long>(done),
        static_cast<long long>(total), train::format_duration(secs).c_str(),
        train::format_duration(secs / static_cast<double>(done) * static_cast<double>(total - done))
            .c_str());
    if (done == total) line.finish();
  };
  // The engine holds the model's weights (shared, not copied, but for o and down), so both stay.
  std::unique_ptr<runtime::FastDecoder> engine;
  auto timer = torch_decode_timer(*loaded.model, options);
  const auto format = runtime::qk::resolve_format(a.quant, loaded.stored_weights, "--quant");
  if (runtime::use_fast_runtime(a.runtime, *loaded.model)) {
    runtime::EngineOptions eo;
    eo.max_rows = std::max<int64_t>(64, options.batch);
    eo.format = format;
    engine = std::make_unique<runtime::FastDecoder>(*loaded.model, eo);
    timer = route::DecodeTimer{};
    timer.runtime = "fast";
    timer.weights = runtime::qk::format_name(format);
    timer.step_ms = [&engine, options](const model::Architecture& arch, int64_t context) {
      return runtime::engine_decode_ms(*engine, arch, context, options.batch, options.warmup,
                                       options.repeats);
    };
  }
  if (!engine && format != runtime::qk::WeightFormat::F32)
    fail("--quant", "quantized weights are profiled on the fast runtime only");
  auto table = profile_latency(*loaded.model, loaded.space, options, progress, timer);
  const auto& config = loaded.model->config();

  std::printf("latency table of %s on %s (%d threads, %s, %s runtime, batch %lld)\n",
              a.model.c_str(), table.hardware["cpu"].get<std::string>().c_str(),
              table.hardware["threads"].get<int>(),
              table.hardware["device"].get<std::string>().c_str(), timer.runtime.c_str(),
              static_cast<long long>(table.batch));
  std::printf("%-10s %-16s %-16s %-10s %-12s %s\n", "context", "full ms/token", "narrowest",
              "fixed ms", "layer scale", "ms per MiB");
  const auto narrowest = model::narrowest_architecture(loaded.space);
  for (size_t i = 0; i < table.contexts.size(); ++i) {
    const int64_t c = table.contexts[i];
    std::printf("%-10lld %-16.4f %-16.4f %-10.4f %-12.3f %.4f\n", static_cast<long long>(c),
                table.decode_ms({}, c), table.decode_ms(narrowest, c), table.fixed_decode_ms[i],
                table.decode_scale[i], table.decode_ms_per_mib[i]);
  }
  std::printf("prefill: %.4f ms/token full, %.4f narrowest; smallest latency fraction %.3f\n",
              table.prefill_ms_per_token({}), table.prefill_ms_per_token(narrowest),
              latency_fraction(table, narrowest));

  auto j = latency_table_to_json(table);
  if (a.check > 0) {
    const auto checks =
        check_latency_table(table, loaded.space, a.check, 4321, timer, options.rounds);
    std::vector<double> errors, uncalibrated;
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& c : checks) {
      errors.push_back(c.relative_error());
      uncalibrated.push_back(c.uncalibrated_error());
      rows.push_back({{"architecture", model::describe_architecture(c.arch, config)},
                      {"context", c.context},
                      {"predicted_ms", c.predicted_ms},
                      {"uncalibrated_ms", c.uncalibrated_ms},
                      {"measured_ms", c.measured_ms}});
    }
    const double med = median(errors), med_uncalibrated = median(uncalibrated);
    const double worst = *std::max_element(errors.begin(), errors.end());
    j["check"] = {{"architectures", rows},
                  {"median_relative_error", med},
                  {"max_relative_error", worst},
                  {"uncalibrated_median_relative_error", med_uncalibrated}};
    std::printf(
        "check: %zu random architectures, prediction vs measurement: median error %.1f%%, "
        "max %.1f%% (the block entries alone, uncalibrated: median %.1f%%)\n",
        checks.size(), 100.0 * med, 100.0 * worst, 100.0 * med_uncalibrated);
  }
  const auto out = a.out.empty() ? a.model / kLatencyFile : a.out;
  io::write_text_atomically(out, j.dump(2) + "\n");
  std::printf("wrote %s\n", out.c_str());
  return j;
}

}  // namespace flextron::route
