// The server's counters, gauges and histograms, rendered in Prometheus' text exposition format
// (version 0.0.4) for GET /metrics. Thread-safe: handlers and the engine record concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace flextron::serve {

class Metrics {
 public:
  // One finished HTTP request: its endpoint (path) and status code.
  void count_request(const std::string& endpoint, int status);
  // One finished generation, labelled by its budget ("0.5", "full") and router kind.
  struct Generation {
    std::string budget;
    std::string router;
    std::string finish_reason;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    double queue_seconds = 0.0;        // submitted -> prefill started
    double first_token_seconds = 0.0;  // submitted -> first token
    double total_seconds = 0.0;        // submitted -> done
  };
  void record_generation(const Generation& g);
  // Sequences decoded together in one engine step.
  void record_batch(int64_t size);
  void add_in_flight(int delta);
  void set_queue(int64_t waiting, int64_t active);
  int64_t in_flight() const;

  std::string render() const;

 private:
  struct Histogram {
    std::vector<double> bounds;    // upper bounds; +Inf is implicit
    std::vector<uint64_t> counts;  // per bound, not cumulative; last = +Inf
    double sum = 0.0;
    uint64_t count = 0;
    void observe(double v);
  };
  static Histogram seconds_histogram();
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> prompt_tokens_, completion_tokens_, generations_;  // by labels
  std::map<std::string, Histogram> latency_, queue_, first_token_, per_token_;
  Histogram batch_{{1, 2, 4, 8, 16, 32}, std::vector<uint64_t>(7), 0.0, 0};
  int64_t in_flight_ = 0, waiting_ = 0, active_ = 0;
};

}  // namespace flextron::serve
