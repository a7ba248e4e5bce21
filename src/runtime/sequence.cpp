#include "runtime/sequence.h"

#include <algorithm>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

std::vector<int64_t> encode_prompt(const text::Tokenizer& tokenizer,
                                   const model::ModelConfig& config, const std::string& prompt) {
  auto tokens = tokenizer.encode(prompt, /*add_bos=*/true);
  const auto n = static_cast<int64_t>(tokens.size());
  if (n >= config.max_position_embeddings)
    fail("prompt", std::to_string(n) + " tokens do not fit the model's context of " +
                       std::to_string(config.max_position_embeddings) + " positions");
  return tokens;
}

Sequence::Sequence(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                   std::vector<int64_t> prompt_tokens, int64_t max_tokens,
                   const SamplingOptions& sampling, const model::Architecture& arch,
                   model::LayerRouter* router)
    : model_(model),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt_tokens)),
      max_tokens_(max_tokens),
      arch_(arch),
      router_(router),
      sampler_(sampling) {
  const auto& config = model.config();
  if (max_tokens < 0) fail("--max-tokens", "must be >= 0");
  if (prompt_.empty()) fail("prompt", "no tokens (not even BOS)");
  if (!arch_.empty()) model::check_architecture(config, arch_, "architecture");
  const auto prompt_len = static_cast<int64_t>(prompt_.size());
  const int64_t capacity = std::min(config.max_position_embeddings, prompt_len + max_tokens);
  // A router picks attention widths at prefill, so its cache is allocated then.
  cache_ =
      model.make_cache(1, capacity, arch_.empty() ? nullptr : &arch_, /*lazy=*/router != nullptr);
}

void Sequence::prefill() {
  c10::InferenceMode inference;
  auto input = torch::tensor(prompt_, torch::kLong).to(model_.device()).unsqueeze(0);
  auto logits = model_.forward(input, &cache_, arch_.empty() ? nullptr : &arch_, router_);
  prev_ = prompt_.back();
  next_ = sampler_.sample(logits[0][static_cast<int64_t>(prompt_.size()) - 1]);
  take_sampled();
}

void Sequence::accept(const torch::Tensor& logits) {
  next_ = sampler_.sample(logits);
  take_sampled();
}

void Sequence::decode_step() {
  c10::InferenceMode inference;
  auto input = torch::full({1, 1}, next_,
                           torch::TensorOptions().dtype(torch::kLong).device(model_.device()));
  accept(model_.forward(input, &cache_, arch_.empty() ? nullptr : &arch_, router_)[0][0]);
}

void Sequence::take_sampled() {
  if (static_cast<int64_t>(tokens_.size()) >= max_tokens_) return finish("length");
  // BOS also ends a sequence: llama2.c's stories models delimit stories with it.
  if (next_ == tokenizer_.eos_id() || next_ == tokenizer_.bos_id()) return finish("eos");
  tokens_.push_back(next_);
  text_ += tokenizer_.decode_piece(prev_, next_);
  prev_ = next_;
  if (static_cast<int64_t>(tokens_.size()) == max_tokens_) return finish("length");
  if (cache_.length >= cache_.capacity) return finish("context");
}

void Sequence::finish(const std::string& reason) {
  if (stop_reason_.empty()) stop_reason_ = reason;
}

std::string Sequence::take_text() {
  std::string out;
  out.swap(text_);
  return out;
}

}  // namespace flextron::runtime
