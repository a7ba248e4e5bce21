// Perplexity of a model on a token stream, under one of two named conventions:
//  - "llama.cpp" (llama-perplexity's): non-overlapping windows of ctx tokens, the first token of
//    each replaced by BOS, and only the second half of each window scored (every scored token
//    has at least ctx/2 tokens of context).
//  - "rolling" (lm-evaluation-harness / HF sliding window): every token after the first is scored
//    exactly once; windows of at most ctx tokens advance by `stride`, so each token sees up to
//    ctx - stride tokens of context.
// Bits per byte = total NLL / ln 2 / UTF-8 bytes of the scored tokens: comparable across
// tokenizers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "text/tokenizer.h"

namespace flextron::eval {

// The window when none is given, capped at the model's context (a default never fails).
inline constexpr int64_t kDefaultPerplexityCtx = 512;

struct PerplexityOptions {
  int64_t ctx = 0;           // 0: min(kDefaultPerplexityCtx, the model's context)
  int64_t stride = 0;        // 0: llama.cpp convention; > 0: rolling windows advancing by stride
  int64_t batch = 4;         // windows per forward
  model::Architecture arch;  // empty: full model
  model::LayerRouter* router = nullptr;  // when set, routes instead of `arch`; not owned
};

struct PerplexityResult {
  std::string convention;
  int64_t ctx = 0;
  int64_t stride = 0;
  int64_t windows = 0;
  int64_t tokens_scored = 0;
  int64_t bytes_scored = 0;
  double total_nll = 0.0;  // nats
  double mean_nll() const;
  double perplexity() const;
  double bits_per_byte() const;
};

// tokens: the whole text encoded with BOS first. Throws flextron::Error if the text is too short
// for one window or ctx exceeds the model's context.
PerplexityResult perplexity(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                            const std::vector<int64_t>& tokens, const PerplexityOptions& options);

}  // namespace flextron::eval
