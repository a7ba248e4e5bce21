#include "serve/connections.h"

#include <thread>
#include <utility>

namespace flextron::serve {

namespace {
thread_local bool tls_over_limit = false;
}

ConnectionThreads::ConnectionThreads(size_t max_connections, size_t max_rejecting)
    : max_connections_(max_connections), max_rejecting_(max_rejecting) {}

ConnectionThreads::~ConnectionThreads() {
  shutdown();
}

void ConnectionThreads::enqueue(std::function<void()> connection) {
  std::unique_lock<std::mutex> lock(mutex_);
  const bool over = serving_ >= max_connections_;
  if (over && rejecting_ >= max_rejecting_) {
    lock.unlock();
    tls_over_limit = true;
    connection();
    tls_over_limit = false;
    return;
  }
  ++(over ? rejecting_ : serving_);
  lock.unlock();
  std::thread([this, over, connection = std::move(connection)] {
    tls_over_limit = over;
    connection();
    std::lock_guard<std::mutex> done(mutex_);
    --(over ? rejecting_ : serving_);
    // Notified under the lock: shutdown() (and the destructor after it) may return as soon as
    // it sees the count reach zero.
    idle_.notify_all();
  }).detach();
}

void ConnectionThreads::shutdown() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return serving_ == 0 && rejecting_ == 0; });
}

bool ConnectionThreads::over_limit() {
  return tls_over_limit;
}

size_t ConnectionThreads::open() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return serving_ + rejecting_;
}

}  // namespace flextron::serve
