// Picking the next token from logits: greedy (temperature 0), temperature, nucleus (top-p).
// Sampling runs on the CPU with our own seeded generator, so a seed gives the same text on
// every device.
#pragma once

#include <cstdint>
#include <random>

#include <torch/types.h>

namespace flextron::runtime {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  double top_p = 1.0;        // keep the smallest set of tokens whose probability mass >= top_p
  uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: [vocab] on any device, any float dtype.
  int64_t sample(const torch::Tensor& logits);
  // logits: [vocab] on the host (the fast runtime's); greedy picks without making a tensor.
  int64_t sample(const float* logits, int64_t vocab);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

// Throws flextron::Error naming the flag when temperature < 0 or top_p outside (0, 1].
void check_sampling_options(const SamplingOptions& options);

}  // namespace flextron::runtime
