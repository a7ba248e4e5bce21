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

}  // namespace flextron
