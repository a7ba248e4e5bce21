// Picking the next token from logits: greedy (temperature 0), temperature, nucleus (top-p).
// Sampling runs on the CPU with our own seeded generator, so a seed gives the same text on
// every device.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

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
  // The distribution sample() draws from, in double: softmax(logits / temperature) cut to the
  // top-p nucleus and renormalised; greedy, all of it on the first maximum. p gets `vocab` entries.
  void distribution(const float* logits, int64_t vocab, std::vector<double>& p) const;
  // One draw from p (non-negative, any positive total) with this sampler's generator.
  int64_t draw(const std::vector<double>& p);
  // A uniform number in [0, 1) from this sampler's generator.
  double uniform();
  bool greedy() const { return options_.temperature == 0.0; }

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
};

// The log-probability of one token under softmax(logits) (temperature 1, no top-p: the model's
// own distribution, as OpenAI reports it), computed in double.
struct TokenChoice {
  int64_t id = 0;
  double logprob = 0.0;
};
// `id`'s log-probability and the `top` most likely tokens' (descending, ties by lower id).
struct TokenLogprobs {
  TokenChoice chosen;
  std::vector<TokenChoice> top;
};
TokenLogprobs token_logprobs(const float* logits, int64_t vocab, int64_t id, int64_t top);

// A generated token's log-probability and the most likely alternatives at its position, each
// with the text it decodes to there (what Sequence records for the server).
struct PieceLogprob {
  int64_t id = 0;
  std::string piece;
  double logprob = 0.0;
};
struct TokenLogprob {
  PieceLogprob token;
  std::vector<PieceLogprob> top;
};

// Throws flextron::Error naming the flag when temperature < 0 or top_p outside (0, 1].
void check_sampling_options(const SamplingOptions& options);

}  // namespace flextron::runtime
