#include "runtime/thread_team.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>

namespace flextron::runtime {

namespace {
using Clock = std::chrono::steady_clock;

// One turn of a wait loop: a pause for the first few hundred turns (the other threads are
// microseconds away), then a yield, so that a team larger than the free cores lets the thread
// it waits for run instead of spinning through its time slice.
inline void relax(int& turns) {
  if (++turns < 256)
    _mm_pause();
  else
    std::this_thread::yield();
}
}  // namespace

ThreadTeam::ThreadTeam(int threads, int64_t spin_us)
    : size_(std::max(1, threads)), spin_us_(std::max<int64_t>(0, spin_us)) {
  workers_.reserve(static_cast<size_t>(size_ - 1));
  for (int t = 1; t < size_; ++t) workers_.emplace_back([this, t] { work(t); });
}

ThreadTeam::~ThreadTeam() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadTeam::run(const std::function<void(int)>& fn) {
  if (size_ == 1) return fn(0);
  job_ = &fn;
  finished_.store(0, std::memory_order_relaxed);
  bool sleepers = false;
  {
    // The increment under the lock, so that a worker deciding to sleep either sees it or is
    // counted and woken.
    std::lock_guard<std::mutex> lock(mutex_);
    pass_.fetch_add(1, std::memory_order_release);
    sleepers = sleeping_ > 0;
  }
  if (sleepers) wake_.notify_all();
  try {
    fn(0);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
  }
  for (int turns = 0; finished_.load(std::memory_order_acquire) != size_ - 1;) relax(turns);
  job_ = nullptr;
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadTeam::barrier() {
  if (size_ == 1) return;
  const uint64_t generation = barrier_generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == size_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    barrier_generation_.store(generation + 1, std::memory_order_release);
    return;
  }
  for (int turns = 0; barrier_generation_.load(std::memory_order_acquire) == generation;)
    relax(turns);
}

void ThreadTeam::work(int t) {
  uint64_t seen = 0;
  for (;;) {
    // Spin for the next pass, then sleep until it comes.
    const auto spin_until = Clock::now() + std::chrono::microseconds(spin_us_);
    for (int turns = 0; pass_.load(std::memory_order_acquire) == seen;) {
      if (stop_.load(std::memory_order_acquire)) return;
      relax(turns);
      if ((turns & 255) == 255 && Clock::now() > spin_until) {
        std::unique_lock<std::mutex> lock(mutex_);
        ++sleeping_;
        wake_.wait(lock, [&] {
          return stop_.load(std::memory_order_acquire) ||
                 pass_.load(std::memory_order_acquire) != seen;
        });
        --sleeping_;
      }
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = pass_.load(std::memory_order_acquire);
    try {
      (*job_)(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    finished_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace flextron::runtime
