// Weighted processor sharing across budgets (serve/schedule.h), simulated with a cost model in
// which a step costs a fixed overhead plus the sum of its rows' weights: every sequence gets an
// equal share of the engine's time, so a row of half the cost gets about twice the steps.
#include <algorithm>
#include <map>
#include <numeric>

#include <gtest/gtest.h>

#include "model/extract.h"
#include "serve/schedule.h"
#include "train/presets.h"

namespace {

using flextron::serve::ScheduleCandidate;
using flextron::serve::select_step_rows;
using flextron::serve::step_shares;

struct Simulated {
  std::vector<int64_t> steps;  // decode steps each sequence took part in
  double charge_spread = 0.0;  // the largest max - min of the charges after the warm-up
};

// Steps the engine's loop (engine.cpp: least charged first, select_step_rows, step_shares)
// `count` times over sequences of the given weights, a step taking overhead + sum of weights.
Simulated simulate(const std::vector<double>& weights, double overhead, int count,
                   int64_t max_rows = 64) {
  const size_t n = weights.size();
  std::vector<double> charge(n, 0.0);
  Simulated out;
  out.steps.assign(n, 0);
  double tau = 0.0;
  for (int step = 0; step < count; ++step) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return charge[a] < charge[b]; });
    std::vector<ScheduleCandidate> candidates;
    for (size_t i : order) candidates.push_back({charge[i], weights[i]});
    std::vector<size_t> rows;
    for (size_t j : select_step_rows(candidates, tau, max_rows)) rows.push_back(order[j]);
    EXPECT_FALSE(rows.empty());
    EXPECT_EQ(rows.front(), order.front()) << "the least charged sequence is always served";
    std::vector<double> w;
    for (size_t i : rows) w.push_back(weights[i]);
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    const double seconds = overhead + total;
    const auto shares = step_shares(w, seconds);
    for (size_t k = 0; k < rows.size(); ++k) {
      charge[rows[k]] += shares[k];
      ++out.steps[rows[k]];
    }
    tau = tau == 0.0 ? seconds / total : 0.8 * tau + 0.2 * seconds / total;
    if (step > count / 10)
      out.charge_spread =
          std::max(out.charge_spread, *std::max_element(charge.begin(), charge.end()) -
                                          *std::min_element(charge.begin(), charge.end()));
  }
  return out;
}

TEST(ServeSchedule, HalfTheCostGetsTwiceTheSteps) {
  // Two sequences at each of budgets 1.0, 0.75 and 0.5, a step's overhead a fifth of a row.
  const std::vector<double> weights{1.0, 1.0, 0.75, 0.75, 0.5, 0.5};
  const auto sim = simulate(weights, 0.2, 6000);
  for (size_t i = 0; i < weights.size(); ++i) {
    // Equal time each: steps in inverse proportion to the cost per step (within 5%).
    const double expected = static_cast<double>(sim.steps[0]) * weights[0] / weights[i];
    EXPECT_NEAR(static_cast<double>(sim.steps[i]), expected, 0.05 * expected) << "sequence " << i;
  }
  // Charges stay within a few steps of each other (fair at every moment, not only on average).
  const double one_step = 0.2 + std::accumulate(weights.begin(), weights.end(), 0.0);
  EXPECT_LT(sim.charge_spread, 2.0 * one_step);
}

TEST(ServeSchedule, OneArchitectureDecodesAsOneBatch) {
  const auto sim = simulate(std::vector<double>(5, 0.6), 0.3, 200);
  for (auto s : sim.steps) EXPECT_EQ(s, 200);  // every sequence in every step
}

TEST(ServeSchedule, CheaperRowsRideAlongAndMaxRowsKeepsTheLeastCharged) {
  // First is a full-model row: every row no costlier joins, however far ahead it is.
  std::vector<ScheduleCandidate> c{{1.0, 1.0}, {5.0, 0.5}, {9.0, 0.25}, {1.5, 1.0}, {40.0, 1.0}};
  EXPECT_EQ(select_step_rows(c, 1.0, 8), (std::vector<size_t>{0, 1, 2, 3, 4}));
  // A costlier row than first joins unless it would pass first by more than one full step.
  std::vector<ScheduleCandidate> d{{2.0, 0.5}, {2.4, 1.0}, {2.6, 1.0}, {3.0, 0.5}};
  EXPECT_EQ(select_step_rows(d, 1.0, 8), (std::vector<size_t>{0, 1, 3}));
  EXPECT_EQ(select_step_rows(d, 1.0, 2), (std::vector<size_t>{0, 1}));
  // Before any step was timed (tau 0) everyone joins.
  EXPECT_EQ(select_step_rows(d, 0.0, 8).size(), 4u);
  EXPECT_TRUE(select_step_rows({}, 1.0, 8).empty());
}

TEST(ServeSchedule, SharesFollowTheWeights) {
  const auto shares = step_shares({1.0, 0.5, 0.5}, 0.8);
  ASSERT_EQ(shares.size(), 3u);
  EXPECT_DOUBLE_EQ(shares[0], 0.4);
  EXPECT_DOUBLE_EQ(shares[1], 0.2);
  EXPECT_DOUBLE_EQ(shares[0] + shares[1] + shares[2], 0.8);
}

// A decode step reads every parameter of its sub-network but the norms' (and the embedding
// table, tied to the LM head, once): the weight is that count over the full model's.
TEST(ServeSchedule, DecodeWeightIsTheWeightsReadPerToken) {
  const auto config = flextron::train::find_preset("tiny").config;
  ASSERT_TRUE(config.tie_word_embeddings);
  const int64_t norms = (1 + 2 * config.num_hidden_layers) * config.hidden_size;
  flextron::model::Architecture half;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    half.push_back({config.layer_mlp(l) / 2, 1});
  const auto read = [&](const flextron::model::Architecture& a) {
    return static_cast<double>(flextron::model::subnetwork_parameter_count(config, a) - norms);
  };
  EXPECT_DOUBLE_EQ(flextron::serve::decode_weight(config, {}), 1.0);
  EXPECT_NEAR(flextron::serve::decode_weight(config, half), read(half) / read({}), 1e-12);
  EXPECT_LT(flextron::serve::decode_weight(config, half), 0.8);
}

}  // namespace
