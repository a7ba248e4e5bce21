#include "runtime/speculative.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "runtime/sequence.h"

namespace flextron::runtime {

SpeculativeStats& SpeculativeStats::operator+=(const SpeculativeStats& o) {
  rounds += o.rounds;
  drafted += o.drafted;
  accepted += o.accepted;
  tokens += o.tokens;
  return *this;
}

double draft_cost_fraction(const model::ModelConfig& config, const model::Architecture& draft,
                           const model::Architecture& verifier) {
  const auto full = model::full_architecture(config);
  const auto& d = draft.empty() ? full : draft;
  const auto& v = verifier.empty() ? full : verifier;
  const double hidden = static_cast<double>(config.hidden_size);
  const double hd = static_cast<double>(config.head_dim());
  const double group = static_cast<double>(config.group_size());
  const double mlp_matrices = config.family == model::Family::Llama ? 3.0 : 2.0;
  auto weights = [&](const model::Architecture& arch) {
    // Per layer: q and o (heads * hd rows each), k and v (kv * hd), the MLP's matrices.
    double total = static_cast<double>(config.vocab_size) * hidden;
    for (const auto& w : arch) {
      const double kv = static_cast<double>(w.kv_groups);
      total += hidden * hd * (2.0 * kv * group + 2.0 * kv);
      total += mlp_matrices * hidden * static_cast<double>(w.mlp);
    }
    return total;
  };
  return weights(d) / weights(v);
}

namespace {
// A verified row's cost beyond the first, as a fraction of a decode step. Rows run their
// products alone (FastDecoder::verify), so only the re-read of weights from the CPU's caches is
// saved: bench/verify_cost measured 0.50-0.57 on a 5.4M-parameter f32 model and 0.93-0.98 on
// stories260K and on q8_0 weights (2 vCPUs, 260 MB L3: every model here is cache-resident).
constexpr double kExtraRowCost = 0.5;
}  // namespace

DraftLength::DraftLength(int64_t fixed, double draft_cost) : fixed_(fixed), cost_(draft_cost) {
  if (fixed < 0 || fixed > kMaxDraftTokens)
    fail("--draft-tokens", "must be 1 to " + std::to_string(kMaxDraftTokens) +
                               " (0: chosen from the acceptance), got " + std::to_string(fixed));
  choose();
}

void DraftLength::update(int64_t drafted, int64_t accepted) {
  // A round that stopped at a rejection tried accepted + 1 tokens; one that kept all, drafted.
  constexpr double kDecay = 0.9;
  kept_ = kDecay * kept_ + static_cast<double>(accepted);
  tried_ = kDecay * tried_ + static_cast<double>(accepted < drafted ? accepted + 1 : drafted);
  choose();
  if (probing_) {
    probing_ = false;
    if (next_ == 0) {
      ++probes_;
      probe_after_ *= 4;
    }
  }
  if (next_ > 0) {
    probes_ = 0;
    probe_after_ = kProbeAfter;
  }
}

void DraftLength::skipped() {
  if (fixed_ == 0 && probes_ < kMaxProbes && ++plain_steps_ >= probe_after_) {
    plain_steps_ = 0;
    next_ = 1;
    probing_ = true;
  }
}

void DraftLength::choose() {
  if (fixed_ > 0) {
    next_ = fixed_;
    return;
  }
  const double a = std::clamp(acceptance(), 0.0, 0.99);
  double best = 1.0;  // plain decoding: one token per step
  next_ = 0;
  for (int64_t k = 1; k <= 8; ++k) {
    const double kd = static_cast<double>(k);
    const double yield = (1.0 - std::pow(a, kd + 1.0)) / (1.0 - a);
    const double rate = yield / (kd * cost_ + 1.0 + kd * kExtraRowCost);
    if (rate > best) {
      best = rate;
      next_ = k;
    }
  }
}

DraftVerdict judge_draft(const std::vector<double>& p, const std::vector<double>& q, int64_t draft,
                         Sampler& sampler) {
  const auto d = static_cast<size_t>(draft);
  // q[draft] > 0 since draft was drawn from q; u < p/q keeps it (always when p >= q).
  const double u = sampler.uniform();
  if (q[d] > 0.0 && u * q[d] < p[d]) return {draft, true};
  std::vector<double> residual(p.size());
  double mass = 0.0;
  for (size_t i = 0; i < p.size(); ++i) {
    residual[i] = std::max(0.0, p[i] - q[i]);
    mass += residual[i];
  }
  // No residual mass means p <= q nowhere differs (rounding): p itself is then the answer.
  return {sampler.draw(mass > 0.0 ? residual : p), false};
}

// ---- Sequence's rounds (declared in runtime/sequence.h) ----

void Sequence::speculate(const SpeculativeOptions& options) {
  if (engine_ == nullptr) fail("--speculative", "runs on the fast runtime only");
  if (router_ != nullptr)
    fail("--speculative", "needs one architecture to verify with, not a dynamic router");
  if (options.draft.empty()) fail("--speculative", "no draft architecture");
  const auto& config = engine_->config();
  model::check_architecture(config, options.draft, "draft architecture");
  Drafting d;
  d.arch = options.draft;
  d.length = DraftLength(options.draft_tokens, draft_cost_fraction(config, d.arch, arch_));
  d.cache = engine_->make_cache(capacity(config), d.arch);
  drafting_ = std::move(d);
}

const SpeculativeStats* Sequence::speculative_stats() const {
  return drafting_ ? &drafting_->stats : nullptr;
}

void Sequence::speculative_step() {
  Drafting& d = *drafting_;
  const int64_t vocab = engine_->config().vocab_size;
  const auto prompt = static_cast<int64_t>(prompt_.size());
  const int64_t at = engine_cache_.length();  // next_'s position
  const int64_t left = max_tokens_ - static_cast<int64_t>(tokens_.size());
  // k drafts and the verifier's k+1 rows must fit the cache, the rows of a pass and the tokens
  // still to write (a round yields up to k+1).
  const int64_t k = std::min(
      {d.length.next(), engine_cache_.capacity() - at - 1, left - 1, engine_->max_rows() - 1});
  if (k < 1) {
    if (d.length.next() == 0) d.length.skipped();
    ++decoded_;
    return accept(engine_->decode(next_, engine_cache_, arch_));
  }

  // The draft catches up on the accepted tokens it has not seen, as plain decoding at its
  // architecture would have stored them (so its cache is that cache): the prompt in one
  // prefill, each later token by a decode step (1 or 2 a round); then it proposes k.
  // After plain steps (k was 0) it is further behind: all but the last token go in one prefill
  // (its cache then differs from decoding's in the last bits, which only the drafts see).
  std::vector<int64_t> input;
  const float* logits = nullptr;
  if (d.cache.length() < prompt) {
    input.assign(prompt_.begin() + d.cache.length(), prompt_.end());
    logits = engine_->prefill(input, d.cache, d.arch);
  }
  if (at - d.cache.length() > 2) {
    input.assign(tokens_.begin() + (d.cache.length() - prompt), tokens_.begin() + (at - prompt));
    engine_->prefill(input, d.cache, d.arch);
  }
  for (int64_t pos = d.cache.length(); pos <= at; ++pos)
    logits = engine_->decode(tokens_[pos - prompt], d.cache, d.arch);
  const bool greedy = sampler_.greedy();
  d.proposal.assign(static_cast<size_t>(k), 0);
  d.q.resize(static_cast<size_t>(k));
  for (int64_t j = 0; j < k; ++j) {
    if (j > 0) logits = engine_->decode(d.proposal[j - 1], d.cache, d.arch);
    if (greedy) {
      d.proposal[j] = std::max_element(logits, logits + vocab) - logits;
    } else {
      sampler_.distribution(logits, vocab, d.q[j]);
      d.proposal[j] = sampler_.draw(d.q[j]);
    }
  }

  // One verifying pass over next_ and the proposals; then each row in turn, as plain decoding
  // would take it, while the proposals hold.
  input.assign(1, next_);
  input.insert(input.end(), d.proposal.begin(), d.proposal.end());
  d.rows.resize(static_cast<size_t>((k + 1) * vocab));
  engine_->verify(input.data(), k + 1, engine_cache_, arch_, d.rows.data());
  int64_t used = 0, kept = 0;
  for (int64_t i = 0; i <= k && !finished(); ++i) {
    const float* row = d.rows.data() + i * vocab;
    used = i + 1;
    stored_override_ = at + i + 1;  // what plain decoding would have stored by now
    bool agreed = false;
    if (greedy) {
      pick(row, vocab);
      agreed = i < k && next_ == d.proposal[i];
    } else {
      const bool masked = mask(row, vocab);
      sampler_.distribution(masked ? masked_.data() : row, vocab, d.p);
      if (i < k) {
        const auto verdict = judge_draft(d.p, d.q[i], d.proposal[i], sampler_);
        next_ = verdict.token;
        agreed = verdict.kept;
      } else {
        next_ = sampler_.draw(d.p);
      }
      settle(row, vocab);
    }
    if (!agreed) break;
    ++kept;
  }
  stored_override_ = -1;
  // Keep the positions of the tokens now accepted before next_: at..at+used-1 in both caches
  // (the draft holds at..at+k-1).
  engine_cache_.truncate(at + used);
  d.cache.truncate(std::min(d.cache.length(), at + used));
  d.stats.rounds += 1;
  d.stats.drafted += k;
  d.stats.accepted += kept;
  d.stats.tokens += used;
  decoded_ += used;
  d.length.update(k, kept);
}

}  // namespace flextron::runtime
