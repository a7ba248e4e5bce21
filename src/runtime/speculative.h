// Self-speculative decoding: a nested sub-network of the model drafts, the full model verifies.
// Every sub-network reads a prefix of the full model's weights, so the draft costs no memory but
// its own KV cache. One round, from the last accepted token t at position L:
//   the draft proposes d_1..d_k (k decode steps at its architecture, on its own cache);
//   the verifier runs t, d_1..d_k in one pass (FastDecoder::verify): row i is its distribution
//   p_i for position L+i+1, bit for bit what plain decoding would compute there;
//   greedy: d_i is kept while it is argmax p_{i-1}; the first that is not is replaced by that
//   argmax, and after k agreements argmax p_k is added: plain decoding's tokens, 1..k+1 a round;
//   sampling (speculative sampling, Leviathan et al. 2023 / Chen et al. 2023): d_i ~ q_i, the
//   draft's distribution, is kept with probability min(1, p(d_i) / q(d_i)); the first rejected
//   is replaced by a draw from max(0, p - q) / Z, and after k kept a draw from p_k is added.
//   Each token is then distributed exactly as p:
//     P(x) = q(x) min(1, p(x)/q(x)) + (1 - sum_y min(p(y), q(y))) (p(x) - q(x))^+ / Z
//          = min(p(x), q(x)) + (p(x) - q(x))^+ = p(x),    Z = sum_y (p(y) - q(y))^+;
//   both caches are cut back to the accepted tokens (EngineCache::truncate).
// Sequence::speculate() turns this on for a sequence on the fast runtime.
#pragma once

#include <cstdint>
#include <vector>

#include "model/transformer.h"
#include "runtime/sampler.h"

namespace flextron::runtime {

// The most tokens a round drafts.
constexpr int64_t kMaxDraftTokens = 16;

struct SpeculativeOptions {
  model::Architecture draft;  // the drafting sub-network (not empty)
  int64_t draft_tokens = 0;   // k per round, 1..kMaxDraftTokens; 0: chosen from the acceptance
};

// What the rounds of one sequence did.
struct SpeculativeStats {
  int64_t rounds = 0;    // verifying passes
  int64_t drafted = 0;   // draft tokens proposed
  int64_t accepted = 0;  // of them, kept
  int64_t tokens = 0;    // tokens the rounds produced (accepted + one per round, unless it ended)
  double acceptance_rate() const {
    return drafted > 0 ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0;
  }
  // Tokens a verifying pass yields on average.
  double tokens_per_round() const {
    return rounds > 0 ? static_cast<double>(tokens) / static_cast<double>(rounds) : 0.0;
  }
  SpeculativeStats& operator+=(const SpeculativeStats& o);
};

// The draft's cost per token as a fraction of the verifier's, from the weights each reads per
// token (attention and MLP of every layer at its widths, and the LM head both read in full).
double draft_cost_fraction(const model::ModelConfig& config, const model::Architecture& draft,
                           const model::Architecture& verifier);

// How many tokens the next round drafts. Fixed, or chosen from the acceptance so far: each draft
// token is taken as kept with probability a (estimated from the rounds with a decaying count),
// a round of k then yields E(k) = (1 - a^(k+1)) / (1 - a) tokens for k draft steps and one
// verifying pass of k+1 rows, and k maximises E(k) / (k c + 1 + k r), c the draft's cost
// fraction and r a verified row's extra cost. k = 0 (plain decoding, rate 1) wins when the
// draft is too often wrong; after kProbeAfter plain steps a round of 1 measures it again, and
// each probe that leaves k at 0 makes the next wait 4 times longer, until after kMaxProbes
// there are none (each probe costs the draft's catch-up on the tokens it skipped). It depends
// on the accepted tokens only, never on timings, so a seed gives the same text on every run.
class DraftLength {
 public:
  static constexpr int64_t kProbeAfter = 16;
  static constexpr int kMaxProbes = 3;
  DraftLength() : DraftLength(0, 0.5) {}
  DraftLength(int64_t fixed, double draft_cost);
  int64_t next() const { return next_; }
  void update(int64_t drafted, int64_t accepted);
  void skipped();  // a plain step taken because next() was 0
  double acceptance() const { return kept_ / tried_; }

 private:
  void choose();
  int64_t fixed_ = 0;
  double cost_ = 0.5;
  double kept_ = 3.0, tried_ = 4.0;  // a prior of 0.75
  int64_t next_ = 4;
  int64_t plain_steps_ = 0;
  int64_t probe_after_ = kProbeAfter;
  int probes_ = 0;  // probes since k was last above 0
  bool probing_ = false;
};

// The sampling rule for one drafted token: `draft` was drawn from q; it is kept when
// u < p[draft] / q[draft] (u from `sampler`), else the token is a draw from max(0, p - q).
struct DraftVerdict {
  int64_t token = 0;
  bool kept = false;
};
DraftVerdict judge_draft(const std::vector<double>& p, const std::vector<double>& q, int64_t draft,
                         Sampler& sampler);

}  // namespace flextron::runtime
