#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

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

void Sampler::distribution(const float* logits, int64_t vocab, std::vector<double>& p) const {
  p.assign(static_cast<size_t>(vocab), 0.0);
  if (vocab <= 0) return;
  const int64_t top = std::max_element(logits, logits + vocab) - logits;
  if (options_.temperature == 0.0) {
    p[static_cast<size_t>(top)] = 1.0;
    return;
  }
  // p_i = exp((l_i - l_max) / T) / Z.
  double total = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double e =
        std::exp((static_cast<double>(logits[i]) - logits[top]) / options_.temperature);
    p[static_cast<size_t>(i)] = e;
    total += e;
  }
  for (auto& v : p) v /= total;
  if (options_.top_p >= 1.0) return;
  // The nucleus as sample() keeps it: descending, tokens while the mass before them < top_p.
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) order[static_cast<size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)];
  });
  double mass = 0.0, kept = 0.0;
  size_t keep = 0;
  while (keep < order.size() && (keep == 0 || mass < options_.top_p)) {
    mass += p[static_cast<size_t>(order[keep])];
    ++keep;
  }
  for (size_t k = keep; k < order.size(); ++k) p[static_cast<size_t>(order[k])] = 0.0;
  for (size_t k = 0; k < keep; ++k) kept += p[static_cast<size_t>(order[k])];
  for (auto& v : p) v /= kept;
}

int64_t Sampler::draw(const std::vector<double>& p) {
  double total = 0.0;
  for (double v : p) total += v;
  const double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  double acc = 0.0;
  int64_t last = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    acc += p[i];
    last = static_cast<int64_t>(i);
    if (r < acc) return last;
  }
  return last;  // rounding can leave r just above the last partial sum
}

double Sampler::uniform() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

TokenLogprobs token_logprobs(const float* logits, int64_t vocab, int64_t id, int64_t top) {
  // log p_i = l_i - (m + log sum_j exp(l_j - m)), m = max_j l_j.
  const double m = *std::max_element(logits, logits + vocab);
  double total = 0.0;
  for (int64_t j = 0; j < vocab; ++j) total += std::exp(static_cast<double>(logits[j]) - m);
  const double log_z = m + std::log(total);
  TokenLogprobs out;
  out.chosen = {id, static_cast<double>(logits[id]) - log_z};
  top = std::min(top, vocab);
  if (top <= 0) return out;
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  for (int64_t j = 0; j < vocab; ++j) order[static_cast<size_t>(j)] = j;
  std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int64_t a, int64_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  for (int64_t k = 0; k < top; ++k) {
    const int64_t j = order[static_cast<size_t>(k)];
    out.top.push_back({j, static_cast<double>(logits[j]) - log_z});
  }
  return out;
}

}  // namespace flextron::runtime
