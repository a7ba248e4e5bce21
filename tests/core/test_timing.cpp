// Interleaved measurement: round-robin order, one median per measured thing.
#include <gtest/gtest.h>

#include "core/timing.h"

namespace {

TEST(InterleavedMedians, MeasuresRoundRobinAndKeepsEachMedian) {
  std::vector<size_t> order;
  std::vector<int64_t> rounds_seen;
  int64_t call = 0;
  // Thing i measures i + 10 * (call-dependent burst): the burst hits one call per round.
  const auto medians = flextron::interleaved_medians(
      3, 5,
      [&](size_t i) {
        order.push_back(i);
        const bool burst = call++ % 4 == 0;
        return static_cast<double>(i) + (burst ? 100.0 : 0.0);
      },
      [&](int64_t r) { rounds_seen.push_back(r); });
  ASSERT_EQ(order.size(), 15u);
  for (size_t k = 0; k < order.size(); ++k) EXPECT_EQ(order[k], k % 3);
  EXPECT_EQ(rounds_seen, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // Bursts land on at most 2 of each thing's 5 measurements: the median ignores them.
  EXPECT_EQ(medians, (std::vector<double>{0.0, 1.0, 2.0}));
}

}  // namespace
