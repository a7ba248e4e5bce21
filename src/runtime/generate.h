// Autoregressive generation with a KV cache: one batched prefill of the prompt, then one
// forward per new token. Prints like llama2.c's run.c: the prompt is echoed, then each piece.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/transformer.h"
#include "runtime/sampler.h"
#include "runtime/sequence.h"
#include "text/tokenizer.h"

namespace flextron::runtime {

struct GenerateOptions {
  int64_t max_tokens = 256;  // new tokens after the prompt
  SamplingOptions sampling;
  model::Architecture arch;  // empty = full model
  // When set, chooses widths layer by layer instead of `arch` (a dynamic router); not owned.
  model::LayerRouter* router = nullptr;
  // Structured output (runtime/json_constraint.h): the sequence samples only what it allows.
  std::shared_ptr<const TokenConstraint> constraint;
  // Self-speculative decoding (runtime/speculative.h) when speculative.draft is not empty: the
  // fast runtime only.
  SpeculativeOptions speculative;
};

struct GenerateResult {
  std::vector<int64_t> prompt_tokens;  // BOS + encoded prompt
  std::vector<int64_t> tokens;         // generated tokens (without the stop token)
  std::string text;                    // decoded generated text (prompt not included)
  std::string stop_reason;             // "length", "eos" or "context"
  std::string stop_description;        // the reason in words (describe_stop_reason)
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  int64_t decode_steps = 0;   // decode steps after the prefill (speculative: rounds)
  int64_t decode_tokens = 0;  // positions they decoded (plain: one a step)
  std::optional<SpeculativeStats> speculative;  // the rounds, when speculating

  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// Runs `sequence` (fresh, on either runtime) to its end: the prefill, then decode steps until it
// stops; streams text through on_text (prompt echo first, then every generated piece).
GenerateResult run_sequence(Sequence& sequence, const text::Tokenizer& tokenizer,
                            const std::function<void(const std::string&)>& on_text = {});

// On the torch forward. Throws flextron::Error if the prompt does not fit the model's context.
GenerateResult generate(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                        const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text = {});

}  // namespace flextron::runtime
