// The latency table's arithmetic, file format and model check (timing itself is tested in
// tests/timing, which runs alone).
#include <cmath>

#include <gtest/gtest.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "model/extract.h"
#include "route/budget.h"
#include "route/budget_table.h"
#include "route_fixtures.h"
#include "test_util.h"

namespace fr = flextron::route;
namespace fm = flextron::model;

TEST(LatencyTable, PredictsTheSumOfItsEntries) {
  auto config = fm::ModelConfig{};
  auto space = fm::default_elastic_space(config);
  auto t = flextron::testing::synthetic_table(config, space);
  t.decode_scale = {1.5};
  EXPECT_NEAR(t.decode_ms({}), 0.2 + 1.5 * config.num_hidden_layers * (0.1 + 0.05), 1e-12);
  fm::Architecture half(static_cast<size_t>(config.num_hidden_layers),
                        {space.mlp[0][0], space.kv_groups[0][0]});
  const double mlp = 0.1 * 40.0 / 172.0, attn = 0.05 * 1.0 / 4.0;
  EXPECT_NEAR(t.decode_ms(half), 0.2 + 1.5 * 5 * (mlp + attn), 1e-12);
  // The router's split of the same cost adds up to the same number.
  double parts = t.fixed_ms();
  for (int64_t l = 0; l < 5; ++l) parts += t.mlp_ms()[l][0] + t.attn_ms()[l][0];
  EXPECT_NEAR(parts, t.decode_ms(half), 1e-12);
  // Widths the table has not measured are an error naming the layer.
  fm::Architecture odd = half;
  odd[3].mlp = 41;
  try {
    t.decode_ms(odd);
    FAIL() << "expected an error";
  } catch (const flextron::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3"), std::string::npos) << e.what();
  }
}

TEST(LatencyTable, InterpolatesBetweenContexts) {
  auto config = fm::ModelConfig{};
  auto space = fm::default_elastic_space(config);
  auto t = flextron::testing::synthetic_table(config, space);
  t.contexts = {100, 300};
  t.fixed_decode_ms = {1.0, 3.0};
  t.decode_scale = {1.0, 1.0};
  for (auto& layer : t.attn_decode_ms)
    for (auto& by_context : layer) by_context = {0.0, 0.0};
  for (auto& layer : t.mlp_decode_ms)
    for (auto& v : layer) v = 0.0;
  EXPECT_NEAR(t.decode_ms({}, 200), 2.0, 1e-12);
  EXPECT_NEAR(t.decode_ms({}, 50), 1.0, 1e-12);   // clamped
  EXPECT_NEAR(t.decode_ms({}, 900), 3.0, 1e-12);  // clamped
  EXPECT_NEAR(t.decode_ms({}), 2.0, 1e-12);       // reference: mean over contexts
}

TEST(LatencyTable, FileRoundTripAndAnotherModelIsRefused) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  auto m = flextron::testing::load_stories260k();
  auto space = fm::default_elastic_space(m->config());
  fr::ProfileOptions options;
  options.contexts = {16, 64};
  options.warmup = 0;
  options.repeats = 1;
  options.prefill_tokens = 8;
  options.calibration_architectures = 2;
  auto table = fr::profile_latency(*m, space, options);
  ASSERT_EQ(table.contexts, (std::vector<int64_t>{16, 64}));
  fr::save_latency_table(dir / "latency.json", table);
  auto back = fr::load_latency_table(dir / "latency.json", m->config(), space);
  auto arch = fm::narrowest_architecture(space);
  arch[2] = {space.mlp[2].back(), space.kv_groups[2][1]};
  EXPECT_DOUBLE_EQ(back.decode_ms(arch, 40), table.decode_ms(arch, 40));
  EXPECT_DOUBLE_EQ(back.prefill_ms_per_token(arch), table.prefill_ms_per_token(arch));

  // The same table offered to another model, or to another elastic space, is refused.
  auto other = m->config();
  other.hidden_size = 128;
  other.num_attention_heads = 8;
  auto other_space = fm::default_elastic_space(other);
  EXPECT_THROW(
      {
        try {
          fr::load_latency_table(dir / "latency.json", other, other_space);
        } catch (const flextron::Error& e) {
          EXPECT_NE(std::string(e.what()).find("another model"), std::string::npos) << e.what();
          EXPECT_NE(std::string(e.what()).find("latency.json"), std::string::npos) << e.what();
          throw;
        }
      },
      flextron::Error);
  auto narrower = space;
  narrower.mlp[0].erase(narrower.mlp[0].begin());
  EXPECT_THROW(fr::load_latency_table(dir / "latency.json", m->config(), narrower),
               flextron::Error);

  // Malformed files name the file.
  flextron::io::write_text_atomically(dir / "bad.json", R"({"format": "flextron-latency-table",
    "version": 1, "model": {}, "hardware": {}, "batch": 1, "contexts": [64, 16]})");
  EXPECT_THROW(fr::load_latency_table(dir / "bad.json", m->config(), space), flextron::Error);
  flextron::io::write_text_atomically(dir / "bad2.json", "{not json");
  EXPECT_THROW(fr::load_latency_table(dir / "bad2.json", m->config(), space), flextron::Error);
}

TEST(Budget, BadBudgetsAreErrors) {
  auto expect_error = [](fr::Budget b, const std::string& what) {
    try {
      fr::check_budget(b, "--budget");
      FAIL() << "accepted " << b.value;
    } catch (const flextron::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("--budget"), std::string::npos) << e.what();
    }
  };
  expect_error({0.0, fr::BudgetKind::Latency}, "must be > 0");
  expect_error({-0.5, fr::BudgetKind::Latency}, "must be > 0");
  expect_error({1.01, fr::BudgetKind::Latency}, "<= 1");
  expect_error({1.5, fr::BudgetKind::Params}, "<= 1");
  expect_error({std::nan(""), fr::BudgetKind::Latency}, "finite");
  expect_error({INFINITY, fr::BudgetKind::Milliseconds}, "finite");
  EXPECT_NO_THROW(fr::check_budget({250.0, fr::BudgetKind::Memory}, "--budget"));
  EXPECT_NO_THROW(fr::check_budget({1.0, fr::BudgetKind::Latency}, "--budget"));
  EXPECT_THROW(fr::parse_budget_kind("speed"), flextron::Error);
  EXPECT_EQ(fr::parse_budget_kind("ms"), fr::BudgetKind::Milliseconds);
}

TEST(Budget, ParameterAndMemoryCosts) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  auto space = fm::default_elastic_space(m->config());
  const auto& config = m->config();
  // The parameter fraction counts exactly the extracted model's parameters.
  EXPECT_DOUBLE_EQ(
      fr::architecture_cost(fr::BudgetKind::Params, config, {}, nullptr, torch::kFloat), 1.0);
  auto arch = fm::narrowest_architecture(space);
  arch[1].mlp = space.mlp[1][3];
  auto extracted = fm::extract_subnetwork(*m, arch);
  EXPECT_EQ(fm::subnetwork_parameter_count(config, arch), extracted->parameter_count());
  EXPECT_EQ(fm::subnetwork_parameter_count(config, {}), m->parameter_count());
  // Memory: weights plus one sequence's KV cache at the full context, in MiB.
  const double kv = 2.0 * 5 * config.head_dim() * config.num_key_value_heads *
                    static_cast<double>(config.max_position_embeddings);
  EXPECT_NEAR(fr::architecture_cost(fr::BudgetKind::Memory, config, {}, nullptr, torch::kFloat),
              (static_cast<double>(m->parameter_count()) + kv) * 4 / 1048576.0, 1e-9);
  // Latency kinds need a table.
  EXPECT_THROW(fr::architecture_cost(fr::BudgetKind::Latency, config, {}, nullptr, torch::kFloat),
               flextron::Error);
}

namespace {

// The calibration fit recovers known coefficients exactly, and keeps them physical when the
// unconstrained fit would not be.
TEST(LatencyFit, RecoversFixedScaleAndPerMibAndStaysPhysical) {
  using Features = flextron::route::LatencyTable::Features;
  std::vector<Features> x;
  std::vector<double> y;
  for (int i = 0; i < 10; ++i) {
    // Entries and MiB vary independently enough to tell apart.
    const Features f{0.1 * i + 0.05 * (i % 3), 2.0 * i * i / 10.0 + (i % 2)};
    x.push_back(f);
    y.push_back(0.3 + 1.7 * f.entries_ms + 0.12 * f.mib);
  }
  auto fit = flextron::route::fit_latency_model(x, y, 0.1);
  EXPECT_NEAR(fit.fixed, 0.3, 1e-9);
  EXPECT_NEAR(fit.scale, 1.7, 1e-9);
  EXPECT_NEAR(fit.per_mib, 0.12, 1e-9);
  EXPECT_NEAR(fit.residual, 0.0, 1e-12);

  // Time falling with bytes is unphysical: the fit keeps per_mib >= 0 and explains the data
  // with entries alone.
  for (size_t i = 0; i < x.size(); ++i) y[i] = 0.3 + 2.0 * x[i].entries_ms - 0.05 * x[i].mib;
  fit = flextron::route::fit_latency_model(x, y, 0.1);
  EXPECT_GE(fit.scale, 0.0);
  EXPECT_GE(fit.per_mib, 0.0);
  EXPECT_GE(fit.fixed, 0.1);
  // The fixed part never drops below the embedding and head's own cost.
  for (size_t i = 0; i < x.size(); ++i) y[i] = 0.05 + 1.0 * x[i].entries_ms;
  fit = flextron::route::fit_latency_model(x, y, 0.2);
  EXPECT_DOUBLE_EQ(fit.fixed, 0.2);
  EXPECT_THROW(flextron::route::fit_latency_model({x[0]}, {y[0]}, 0.0), flextron::Error);
}

}  // namespace
