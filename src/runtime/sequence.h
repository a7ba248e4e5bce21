// One sequence being generated: its prompt, KV cache, sampler and stopping rule, stepped from
// outside. generate() drives one with its own forwards; the server's scheduler drives many,
// batching the decode steps of those that share an architecture. A sequence runs on the torch
// forward (TransformerImpl, any family, device or router) or on the fast CPU engine
// (runtime/fast_decoder.h); both share everything here but the forward.
//
// The life of a sequence: prefill() runs the prompt and samples the first token; while
// !finished(), decode_step() runs the next forward alone, or a caller batching several sequences
// runs next_input() on cache() / engine_cache() (TransformerImpl::decode_rows /
// FastDecoder::decode_batch) and hands the logits to accept(), which samples the next token.
// Every accepted token's text collects until take_text().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "runtime/fast_decoder.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/token_constraint.h"
#include "text/tokenizer.h"

namespace flextron::runtime {

// BOS + the encoded prompt. Throws flextron::Error naming "prompt" when it leaves no room in the
// model's context for a single new token.
std::vector<int64_t> encode_prompt(const text::Tokenizer& tokenizer,
                                   const model::ModelConfig& config, const std::string& prompt);
// Throws flextron::Error naming `where` when `tokens` prompt tokens leave no room for a new one.
void check_prompt_fits(const model::ModelConfig& config, int64_t tokens, const std::string& where);

// A stop reason in words, one family for all of them: "stopped: reached the maximum of 256 new
// tokens", "stopped: the model ended the text (end-of-sequence token)", "stopped: reached the
// model's context length (256 positions)", "stopped: generated a stop string", "stopped:
// cancelled". max_tokens and context fill in the numbers.
std::string describe_stop_reason(const std::string& reason, int64_t max_tokens, int64_t context);

// A dynamic router's prefill for the fast engine: `model`'s forward with `router` over `tokens`
// (one sequence), which lets the router choose each layer's attention width from the whole
// prompt, then its KV cache copied into an engine cache of `capacity` positions. `arch` is what
// the decode steps pass: the chosen KV widths, full MLP widths (the router picks those per
// token); `last_logits` the prompt's last position's logits [vocab].
struct RoutedPrefill {
  EngineCache cache;
  model::Architecture arch;
  torch::Tensor last_logits;
};
RoutedPrefill routed_prefill(FastDecoder& engine, model::TransformerImpl& model,
                             model::LayerRouter& router, const std::vector<int64_t>& tokens,
                             int64_t capacity);

class Sequence {
 public:
  // On the torch forward. arch: empty = full model; router: chooses widths instead (not owned,
  // may be null).
  Sequence(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
           std::vector<int64_t> prompt_tokens, int64_t max_tokens, const SamplingOptions& sampling,
           const model::Architecture& arch, model::LayerRouter* router = nullptr);
  // On the fast engine (not owned), at `arch` (empty = full model). With a router (one that
  // routes_on_host()), the prompt is prefilled by `model`'s forward, which lets the router choose
  // every layer's widths from the whole prompt as it does on the torch path, and the decode
  // steps run on the engine, the router picking MLP widths token by token.
  Sequence(FastDecoder& engine, const text::Tokenizer& tokenizer,
           std::vector<int64_t> prompt_tokens, int64_t max_tokens, const SamplingOptions& sampling,
           const model::Architecture& arch, model::LayerRouter* router = nullptr,
           model::TransformerImpl* model = nullptr);

  // Records every accepted token's log-probability and the `top` most likely alternatives'
  // (0: none); call before prefill().
  void record_logprobs(int64_t top) { logprobs_top_ = top; }
  // Token ids that end the sequence as the tokenizer's end-of-sequence ids do (a chat template's
  // end-of-turn token); call before prefill().
  void stop_at(std::vector<int64_t> ids) { stop_ids_ = std::move(ids); }
  // Only tokens `constraint` allows are sampled (structured output); the sequence owns it, and
  // ends only where it may end. Call before prefill().
  void constrain(std::unique_ptr<TokenConstraint> constraint) {
    constraint_ = std::shared_ptr<TokenConstraint>(std::move(constraint));
  }
  // Self-speculative decoding (runtime/speculative.h; fast runtime, no router): each decode
  // step drafts with options.draft and verifies with the sequence's own architecture, accepting
  // 1 to k+1 tokens: greedy, plain decoding's tokens; sampling, its distribution. Call before
  // prefill(). Throws flextron::Error for a draft outside the model or a torch-path sequence.
  void speculate(const SpeculativeOptions& options);
  // Positions decode_step() has decoded (one a step; a speculative round, those it accepted).
  int64_t decoded() const { return decoded_; }
  // The draft's cache (null when not speculating): it holds a prefix of the accepted tokens.
  const EngineCache* draft_cache() const { return drafting_ ? &drafting_->cache : nullptr; }
  // The rounds so far (null when not speculating).
  const SpeculativeStats* speculative_stats() const;
  // One forward over the prompt, then the first token.
  void prefill();
  // A copy of this sequence just after its prefill() (before any decode step) that samples its
  // first token again, with `seed`: n choices of one prompt from one prefill.
  std::unique_ptr<Sequence> fork(uint64_t seed) const;
  // The token the next decode step feeds (the last one sampled).
  int64_t next_input() const { return next_; }
  // The cache of the sequence's runtime: cache() on the torch forward, engine_cache() on the
  // fast engine (null on the other).
  model::KVCache* cache() { return engine_ == nullptr ? &cache_ : nullptr; }
  EngineCache* engine_cache() { return engine_ != nullptr ? &engine_cache_ : nullptr; }
  FastDecoder* engine() const { return engine_; }
  // Samples from logits [vocab] of the last decode step.
  void accept(const torch::Tensor& logits);
  void accept(const float* logits);
  // One decode step of this sequence alone: the forward of next_input(), then accept(); a
  // speculative sequence runs a round instead, which may accept several tokens.
  void decode_step();
  // Ends the sequence early (a stop string matched, or the client went away).
  void finish(const std::string& reason);

  bool finished() const { return !stop_reason_.empty(); }
  // "length", "eos", "context", or what finish() was given; empty while running.
  const std::string& stop_reason() const { return stop_reason_; }
  // describe_stop_reason() of it with this sequence's limits; empty while running.
  std::string stop_description() const;
  const std::vector<int64_t>& prompt_tokens() const { return prompt_; }
  const std::vector<int64_t>& tokens() const { return tokens_; }
  // Text of the tokens accepted since the last call (bytes; a UTF-8 character may be split
  // across calls when the tokenizer emits byte pieces).
  std::string take_text();
  // The log-probabilities of the tokens accepted since the last call (record_logprobs()).
  std::vector<TokenLogprob> take_logprobs();

 private:
  Sequence(const Sequence&) = default;  // fork()
  // Samples next_ from logits [vocab], then settle().
  void pick(const float* logits, int64_t vocab);
  // Keeps next_'s log-probabilities under logits when recorded, then take_sampled().
  void settle(const float* logits, int64_t vocab);
  void speculative_step();  // one round (runtime/speculative.cpp)
  void take_sampled();      // appends next_ or ends the sequence
  // logits with what the constraint forbids set to -inf (into masked_); true when constrained.
  bool mask(const float* logits, int64_t vocab);
  bool is_end(int64_t id) const;

  // What both runtimes' constructors share: the fields and the argument checks.
  Sequence(model::TransformerImpl* model, FastDecoder* engine, const text::Tokenizer& tokenizer,
           std::vector<int64_t> prompt_tokens, int64_t max_tokens, const SamplingOptions& sampling,
           const model::Architecture& arch, model::LayerRouter* router);
  int64_t capacity(const model::ModelConfig& config) const;

  model::TransformerImpl* model_ = nullptr;  // one of the two runtimes
  FastDecoder* engine_ = nullptr;
  const text::Tokenizer& tokenizer_;
  std::vector<int64_t> prompt_;
  int64_t max_tokens_;
  model::Architecture arch_;
  model::LayerRouter* router_;
  SamplingOptions sampling_;
  Sampler sampler_;
  std::vector<int64_t> stop_ids_;
  // Shared only between fork() and its source until fork() clones it: each sequence advances
  // its own (first_constraint_ is the state before the first token, what a fork starts from).
  std::shared_ptr<TokenConstraint> constraint_, first_constraint_;
  std::vector<float> masked_;
  std::vector<uint8_t> allowed_;
  int64_t logprobs_top_ = -1;           // -1: not recorded
  std::vector<float> prefill_logits_;   // the prompt's last position's: fork() samples again
  TokenLogprobs pending_;               // next_'s, until take_sampled() appends it
  std::vector<TokenLogprob> logprobs_;  // not yet taken
  model::KVCache cache_;
  EngineCache engine_cache_;
  std::vector<int64_t> tokens_;
  std::string text_;
  int64_t prev_ = 0, next_ = 0;
  std::string stop_reason_;
  // Speculative decoding: the draft's architecture, cache and the round's buffers.
  struct Drafting {
    model::Architecture arch;
    EngineCache cache;
    DraftLength length;
    SpeculativeStats stats;
    std::vector<int64_t> proposal;
    std::vector<std::vector<double>> q;  // the draft's distribution per proposal (sampling)
    std::vector<double> p;               // the verifier's, at the row being judged
    std::vector<float> rows;             // the verifying pass's logits
  };
  std::optional<Drafting> drafting_;
  // While a round takes its verified rows: the positions plain decoding would have stored
  // (the verifier's cache already holds them all); -1 otherwise.
  int64_t stored_override_ = -1;
  int64_t decoded_ = 0;
};

}  // namespace flextron::runtime
