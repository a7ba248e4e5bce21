// A fixed team of threads for the fast engine's passes (runtime/fast_decoder.h): the caller is
// thread 0, the others live as long as the team. Between passes the workers spin for a while
// before they sleep, because a decode step of a small model takes tens of microseconds and
// waking a sleeping thread costs about as much. Unlike an OpenMP region per pass, how long they
// spin is the engine's choice, not libgomp's (whose policy depends on OMP_WAIT_POLICY,
// GOMP_SPINCOUNT and how many threads LibTorch's own pool has made).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace flextron::runtime {

class ThreadTeam {
 public:
  // `spin_us`: how long an idle worker spins for the next pass before it sleeps.
  explicit ThreadTeam(int threads, int64_t spin_us = 2000);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  int size() const { return size_; }
  // Runs fn(t) on every thread t of the team (t = 0 on the caller) and returns when all have
  // finished; an exception thrown by any thread is rethrown here (the first one). fn must not
  // throw between barriers (the other threads would wait for it).
  void run(const std::function<void(int)>& fn);
  // Inside run: waits until every thread of the team has arrived. What a thread wrote before it
  // is visible to every thread after it (release/acquire), as after `omp barrier`.
  void barrier();

 private:
  void work(int t);
  int size_;
  int64_t spin_us_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  alignas(64) std::atomic<uint64_t> pass_{0};  // incremented to start a pass
  alignas(64) std::atomic<int> finished_{0};   // workers done with the current pass
  alignas(64) std::atomic<int> arrived_{0};    // at the barrier
  alignas(64) std::atomic<uint64_t> barrier_generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;  // sleeping workers and exceptions
  std::condition_variable wake_;
  int sleeping_ = 0;
  std::exception_ptr error_;
};

}  // namespace flextron::runtime
