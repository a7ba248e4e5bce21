// Wall-clock timing for benchmarks and the latency profiler: the median of repeated runs, with
// the device synchronised around each run so GPU work is counted where it happens.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include <torch/types.h>

namespace flextron {

// Milliseconds of each of `repeats` calls of fn after `warmup` untimed calls.
std::vector<double> time_calls_ms(const std::function<void()>& fn, int64_t warmup, int64_t repeats,
                                  torch::Device device = torch::kCPU);

double median(std::vector<double> values);

// Measures each of n things once per round, round-robin over `rounds` rounds, and returns each
// one's median: on a shared machine slow drift and bursts of load then reach all alike instead
// of whichever was being measured at the time. on_round(r) is called after round r (1-based).
std::vector<double> interleaved_medians(size_t n, int64_t rounds,
                                        const std::function<double(size_t)>& measure,
                                        const std::function<void(int64_t)>& on_round = {});

}  // namespace flextron
