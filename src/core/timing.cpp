#include "core/timing.h"

#include <algorithm>
#include <chrono>

#include <torch/cuda.h>

namespace flextron {

namespace {
void synchronize(torch::Device device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}
}  // namespace

std::vector<double> time_calls_ms(const std::function<void()>& fn, int64_t warmup, int64_t repeats,
                                  torch::Device device) {
  for (int64_t i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(repeats));
  for (int64_t i = 0; i < repeats; ++i) {
    synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    synchronize(device);
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return ms;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  double lower =
      *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

std::vector<double> interleaved_medians(size_t n, int64_t rounds,
                                        const std::function<double(size_t)>& measure,
                                        const std::function<void(int64_t)>& on_round) {
  std::vector<std::vector<double>> samples(n);
  for (int64_t r = 1; r <= std::max<int64_t>(1, rounds); ++r) {
    for (size_t i = 0; i < n; ++i) samples[i].push_back(measure(i));
    if (on_round) on_round(r);
  }
  std::vector<double> out;
  for (auto& s : samples) out.push_back(median(std::move(s)));
  return out;
}

}  // namespace flextron
