// The engine's thread team: every thread runs each pass, a barrier orders what they write, an
// exception reaches the caller, and a team whose workers have gone to sleep wakes for the next
// pass.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/thread_team.h"

using flextron::runtime::ThreadTeam;

TEST(RuntimeThreadTeam, BarrierMakesEveryThreadsWritesVisible) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadTeam team(threads);
    ASSERT_EQ(team.size(), threads);
    std::vector<int64_t> slot(static_cast<size_t>(threads)), seen(slot.size());
    for (int64_t pass = 1; pass <= 2000; ++pass) {
      team.run([&](int t) {
        slot[static_cast<size_t>(t)] = pass * (t + 1);  // phase 1: each its own slot
        team.barrier();
        int64_t sum = 0;  // phase 2: every slot, as written in this pass
        for (int64_t v : slot) sum += v;
        seen[static_cast<size_t>(t)] = sum;
        team.barrier();  // nobody starts the next pass's writes before all have read
      });
      const int64_t expected = pass * threads * (threads + 1) / 2;
      for (int t = 0; t < threads; ++t)
        ASSERT_EQ(seen[static_cast<size_t>(t)], expected) << threads << " threads, pass " << pass;
    }
  }
}

TEST(RuntimeThreadTeam, EveryThreadRunsOncePerPass) {
  ThreadTeam team(3);
  std::vector<std::atomic<int>> runs(3);
  for (int pass = 0; pass < 500; ++pass) team.run([&](int t) { runs[static_cast<size_t>(t)]++; });
  for (const auto& r : runs) EXPECT_EQ(r.load(), 500);
}

TEST(RuntimeThreadTeam, AWorkersExceptionReachesTheCaller) {
  ThreadTeam team(2);
  EXPECT_THROW(team.run([](int t) {
    if (t == 1) throw std::runtime_error("worker failed");
  }),
               std::runtime_error);
  // The team is usable afterwards.
  std::atomic<int> count{0};
  team.run([&](int) { ++count; });
  EXPECT_EQ(count.load(), 2);
}

TEST(RuntimeThreadTeam, SleepingWorkersWakeForTheNextPass) {
  ThreadTeam team(2, /*spin_us=*/100);
  std::atomic<int> count{0};
  team.run([&](int) { ++count; });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // long past the spin: asleep
  team.run([&](int) { ++count; });
  EXPECT_EQ(count.load(), 4);
}
