// How the server gives connections threads. httplib's ThreadPool has a fixed number of workers
// and an unbounded queue in front of them: a keep-alive or slow client holds a worker while it
// idles, so ~90 idle connections left /health waiting seconds in the queue, unseen. Instead every
// connection gets its own thread at once, up to a bound; beyond the bound a connection is still
// read (from a small, separate set of threads) but only to answer 503 and close it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>

#include <httplib.h>

namespace flextron::serve {

class ConnectionThreads : public httplib::TaskQueue {
 public:
  // `max_connections` served at once; up to `max_rejecting` more answered 503. Past both, the
  // accepting thread answers the connection itself (back-pressure: the kernel's backlog holds
  // the rest).
  ConnectionThreads(size_t max_connections, size_t max_rejecting);
  ~ConnectionThreads() override;

  void enqueue(std::function<void()> connection) override;
  // Waits until every connection thread has finished (httplib calls it once it stops
  // accepting; open connections end within the keep-alive timeout).
  void shutdown() override;

  // Whether the calling thread serves a connection over the bound (its requests get 503).
  static bool over_limit();
  size_t open() const;  // connections being served or rejected now

 private:
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  size_t max_connections_, max_rejecting_;
  size_t serving_ = 0, rejecting_ = 0;
};

}  // namespace flextron::serve
