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
  return decode_seconds > 0 ? static_cast<double>(decode_steps) / decode_seconds : 0.0;
}

GenerateResult generate(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                        const std::string& prompt, const GenerateOptions& options,
                        const std::function<void(const std::string&)>& on_text) {
  const auto& config = model.config();
  if (options.max_tokens < 0) fail("--max-tokens", "must be >= 0");
  if (!options.arch.empty()) model::check_architecture(config, options.arch, "architecture");
  c10::InferenceMode inference;

  GenerateResult result;
  result.prompt_tokens = tokenizer.encode(prompt, /*add_bos=*/true);
  const auto prompt_len = static_cast<int64_t>(result.prompt_tokens.size());
  if (prompt_len >= config.max_position_embeddings)
    fail("prompt", std::to_string(prompt_len) + " tokens do not fit the model's context of " +
                       std::to_string(config.max_position_embeddings) + " positions");
  if (on_text) {
    std::string echo;
    for (int64_t i = 1; i < prompt_len; ++i)
      echo += tokenizer.decode_piece(result.prompt_tokens[i - 1], result.prompt_tokens[i]);
    if (!echo.empty()) on_text(echo);
  }

  const int64_t capacity =
      std::min(config.max_position_embeddings, prompt_len + options.max_tokens);
  const auto* arch = options.arch.empty() ? nullptr : &options.arch;
  // A router picks attention widths at prefill, so its cache is allocated then.
  auto cache = model.make_cache(1, capacity, arch, /*lazy=*/options.router != nullptr);
  Sampler sampler(options.sampling);
  const auto device = model.device();

  auto start = std::chrono::steady_clock::now();
  auto input = torch::tensor(result.prompt_tokens, torch::kLong).to(device).unsqueeze(0);
  auto logits = model.forward(input, &cache, arch, options.router);
  int64_t next = sampler.sample(logits[0][prompt_len - 1]);
  result.prefill_seconds = seconds_since(start);

  int64_t prev = result.prompt_tokens.back();
  result.stop_reason = "length";
  start = std::chrono::steady_clock::now();
  while (static_cast<int64_t>(result.tokens.size()) < options.max_tokens) {
    // BOS also ends a sequence: llama2.c's stories models delimit stories with it.
    if (next == tokenizer.eos_id() || next == tokenizer.bos_id()) {
      result.stop_reason = "eos";
      break;
    }
    result.tokens.push_back(next);
    auto piece = tokenizer.decode_piece(prev, next);
    result.text += piece;
    if (on_text) on_text(piece);
    prev = next;
    if (static_cast<int64_t>(result.tokens.size()) == options.max_tokens) break;
    if (cache.length >= cache.capacity) {
      result.stop_reason = "context";
      break;
    }
    logits = model.forward(
        torch::full({1, 1}, next, torch::TensorOptions().dtype(torch::kLong).device(device)),
        &cache, arch, options.router);
    next = sampler.sample(logits[0][0]);
    ++result.decode_steps;
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace flextron::runtime
