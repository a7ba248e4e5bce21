#include "runtime/generate.h"

#include <chrono>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens.size()) / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(decode_tokens) / decode_seconds : 0.0;
}

GenerateResult run_sequence(Sequence& sequence, const text::Tokenizer& tokenizer,
                            const std::function<void(const std::string&)>& on_text) {
  GenerateResult result;
  result.prompt_tokens = sequence.prompt_tokens();
  if (on_text) {
    const auto& p = result.prompt_tokens;
    std::string echo;
    for (size_t i = 1; i < p.size(); ++i) echo += tokenizer.decode_piece(p[i - 1], p[i]);
    if (!echo.empty()) on_text(echo);
  }
  auto emit = [&] {
    auto piece = sequence.take_text();
    result.text += piece;
    if (on_text && !piece.empty()) on_text(piece);
  };

  auto start = std::chrono::steady_clock::now();
  sequence.prefill();
  result.prefill_seconds = seconds_since(start);
  emit();

  start = std::chrono::steady_clock::now();
  while (!sequence.finished()) {
    sequence.decode_step();
    ++result.decode_steps;
    emit();
  }
  result.decode_seconds = seconds_since(start);
  result.decode_tokens = sequence.decoded();
  if (const auto* stats = sequence.speculative_stats()) result.speculative = *stats;
  result.tokens = sequence.tokens();
  result.stop_reason = sequence.stop_reason();
  result.stop_description = sequence.stop_description();
  return result;
}

GenerateResult generate(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                        const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text) {
  c10::InferenceMode inference;
  Sequence sequence(model, tokenizer, encode_prompt(tokenizer, model.config(), prompt),
                    options.max_tokens, options.sampling, options.arch, options.router);
  if (options.constraint) sequence.constrain(options.constraint->clone());
  if (!options.speculative.draft.empty()) sequence.speculate(options.speculative);  // throws
  return run_sequence(sequence, tokenizer, on_text);
}

}  // namespace flextron::runtime
