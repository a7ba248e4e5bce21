#include "runtime/sampler.h"

#include <algorithm>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

void check_sampling_options(const SamplingOptions& options) {
  if (!(options.temperature >= 0.0))
    fail("--temperature", "must be >= 0, got " + std::to_string(options.temperature));
  if (!(options.top_p > 0.0 && options.top_p <= 1.0))
    fail("--top-p", "must be in (0, 1], got " + std::to_string(options.top_p));
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  check_sampling_options(options);
}

int64_t Sampler::sample(const float* logits, int64_t vocab) {
  // The first maximum, as torch's argmax picks it.
  if (options_.temperature == 0.0)
    return static_cast<int64_t>(std::max_element(logits, logits + vocab) - logits);
  return sample(torch::from_blob(const_cast<float*>(logits), {vocab}, torch::kFloat));
}

int64_t Sampler::sample(const torch::Tensor& logits) {
  auto l = logits.detach().to(torch::kCPU, torch::kFloat).reshape({-1});
  if (options_.temperature == 0.0) return l.argmax().item<int64_t>();
  auto probs = torch::softmax(l / options_.temperature, 0);
  torch::Tensor ids;
  if (options_.top_p < 1.0) {
    // Nucleus: sort descending, keep tokens until the cumulative mass reaches top_p (always at
    // least the most likely one), renormalise over the kept set.
    auto [sorted, order] = probs.sort(0, /*descending=*/true);
    auto cumulative = sorted.cumsum(0);
    const int64_t keep =
        std::max<int64_t>(1, (cumulative < options_.top_p).sum().item<int64_t>() + 1);
    probs = sorted.narrow(0, 0, std::min(keep, sorted.size(0)));
    ids = order.narrow(0, 0, probs.size(0));
  }
  const auto* p = probs.data_ptr<float>();
  double total = 0.0;
  for (int64_t i = 0; i < probs.size(0); ++i) total += p[i];
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double acc = 0.0;
  int64_t pick = probs.size(0) - 1;  // rounding can leave r just above the last partial sum
  for (int64_t i = 0; i < probs.size(0); ++i) {
    acc += p[i];
    if (r < acc) {
      pick = i;
      break;
    }
  }
  return ids.defined() ? ids[pick].item<int64_t>() : pick;
}

}  // namespace flextron::runtime
