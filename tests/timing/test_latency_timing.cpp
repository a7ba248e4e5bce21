// The latency table against the clock: its predictions for random architectures must match their
// measured decode latency (median relative error within 25%, and never clearly worse than the
// uncalibrated sum of isolated block timings on the same measurements). Runs alone (RUN_SERIAL);
// the tolerance absorbs a shared VM's noise: on the 2-vCPU development VM a correct table's median
// error ranges from 2% to 18% from run to run as neighbours load the shared cache.
#include <algorithm>

#include <gtest/gtest.h>

#include "core/timing.h"
#include "model/elastic_space.h"
#include "route/latency.h"
#include "stories260k.h"
#include "test_util.h"
#include "train/presets.h"

namespace fr = flextron::route;
namespace fm = flextron::model;

namespace {
// Another process on a shared machine only ever adds error (it slows some timings and not
// others), so the table gets up to three attempts, each profiled and checked afresh; a wrong table
// fails all three.
void expect_table_predicts(fm::TransformerImpl& m) {
  auto space = fm::default_elastic_space(m.config());
  fr::ProfileOptions options;
  options.contexts = {64, 256};
  double best = 1e9, uncalibrated_at_best = 0.0;
  for (int attempt = 1; attempt <= 3 && best >= 0.15; ++attempt) {
    auto table = fr::profile_latency(m, space, options);
    auto checks = fr::check_latency_table(m, table, space, 20, 4321, 5, 25);
    ASSERT_EQ(checks.size(), 20u);
    // The same table without its calibration: embedding + head plus the isolated block timings.
    auto raw = table;
    raw.fixed_decode_ms.assign(raw.contexts.size(), raw.head_decode_ms);
    raw.decode_scale.assign(raw.contexts.size(), 1.0);
    raw.decode_ms_per_mib.assign(raw.contexts.size(), 0.0);
    std::vector<double> errors, raw_errors;
    for (const auto& c : checks) {
      errors.push_back(c.relative_error());
      raw_errors.push_back(std::abs(raw.decode_ms(c.arch, c.context) - c.measured_ms) /
                           c.measured_ms);
    }
    const double median_error = flextron::median(errors);
    if (median_error < best)
      best = median_error, uncalibrated_at_best = flextron::median(raw_errors);
    std::printf(
        "attempt %d: median relative error %.1f%% over %zu architectures (uncalibrated sum "
        "%.1f%%); narrowest/full %.3f\n",
        attempt, 100.0 * median_error, errors.size(), 100.0 * flextron::median(raw_errors),
        table.decode_ms(fm::narrowest_architecture(space)) / table.decode_ms({}));
  }
  EXPECT_LT(best, 0.25);
  // Where isolated timings already predict well (stories260K on a machine whose cache holds it:
  // CI measured 7.3% calibrated vs 6.8% raw), the fit cannot beat them by much, so it only must
  // not cost more than 5 points; where they mislead (the small preset: 14% vs 56%), it wins.
  EXPECT_LT(best, uncalibrated_at_best + 0.05);
}
}  // namespace

// stories260K: so small that per-operation overhead, not width, sets its latency.
TEST(LatencyTiming, TablePredictsRandomArchitecturesOfStories260K) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  expect_table_predicts(*m);
}

// The `small` preset's shape (random weights; timing does not depend on their values), where
// width does set the latency.
TEST(LatencyTiming, TablePredictsRandomArchitecturesOfTheSmallPreset) {
  torch::manual_seed(0);
  fm::Transformer m(flextron::train::find_preset("small").config);
  m->eval();
  expect_table_predicts(*m);
}
