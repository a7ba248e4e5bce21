#include "runtime/fast_generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "runtime/sequence.h"

namespace flextron::runtime {

namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

bool fast_runtime_supports(const model::TransformerImpl& model, const GenerateOptions& options,
                           std::string* why) {
  std::string reason;
  if (model.config().family != model::Family::Llama)
    reason = "the fast runtime runs the Llama family only";
  else if (!model.device().is_cpu())
    reason = "the fast runtime runs on the CPU only";
  else if (model.dtype() != torch::kFloat)
    reason = "the fast runtime runs fp32 weights only";
  else if (options.router != nullptr)
    reason = "dynamic (per-token) routing runs on the torch runtime";
  if (why != nullptr) *why = reason;
  return reason.empty();
}

bool use_fast_runtime(const std::string& choice, const model::TransformerImpl& model,
                      const GenerateOptions& options) {
  if (choice == "torch") return false;
  if (choice != "auto" && choice != "fast")
    fail("--runtime", "'" + choice + "' is not a runtime (auto, fast or torch)");
  std::string why;
  const bool ok = fast_runtime_supports(model, options, &why);
  if (!ok && choice == "fast") fail("--runtime", why);
  return ok;
}

int64_t sample_logits(Sampler& sampler, const SamplingOptions& options, const float* logits,
                      int64_t vocab) {
  // The first maximum, as torch's argmax picks it.
  if (options.temperature == 0.0)
    return static_cast<int64_t>(std::max_element(logits, logits + vocab) - logits);
  return sampler.sample(torch::from_blob(const_cast<float*>(logits), {vocab}, torch::kFloat));
}

double engine_perplexity(FastDecoder& engine, const std::vector<int64_t>& tokens, int64_t window,
                         const model::Architecture& arch) {
  const auto n = static_cast<int64_t>(tokens.size());
  if (n < 2) fail("perplexity", "needs at least 2 tokens");
  const int64_t vocab = engine.config().vocab_size;
  window = std::min({window, n, engine.config().max_position_embeddings});
  auto cache = engine.make_cache(window, arch);
  std::vector<float> logits(static_cast<size_t>(window * vocab));
  double nll = 0.0;
  int64_t scored = 0;
  for (int64_t start = 0; start + 1 < n; start += window) {
    const int64_t len = std::min(window, n - start);
    if (len < 2) break;
    cache.reset();
    engine.prefill(tokens.data() + start, len, cache, arch, logits.data());
    for (int64_t t = 0; t + 1 < len; ++t) {
      // -log softmax(row t)[next] = logsumexp(row) - row[next], in double.
      const float* row = logits.data() + t * vocab;
      const double top = *std::max_element(row, row + vocab);
      double sum = 0.0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - top);
      nll += top + std::log(sum) - row[tokens[start + t + 1]];
      ++scored;
    }
  }
  return std::exp(nll / static_cast<double>(scored));
}

GenerateResult generate_fast(FastDecoder& engine, const text::Tokenizer& tokenizer,
                             const std::string& prompt, const GenerateOptions& options,
                             const std::function<void(const std::string&)>& on_text) {
  if (options.router != nullptr)
    fail("fast runtime", "dynamic (per-token) routing runs on the torch runtime");
  if (options.max_tokens < 0) fail("--max-tokens", "must be >= 0");
  const auto& config = engine.config();
  const int64_t vocab = config.vocab_size;
  GenerateResult result;
  result.prompt_tokens = encode_prompt(tokenizer, config, prompt);
  const auto& p = result.prompt_tokens;
  const auto prompt_len = static_cast<int64_t>(p.size());
  auto cache = engine.make_cache(
      std::min(config.max_position_embeddings, prompt_len + options.max_tokens), options.arch);
  Sampler sampler(options.sampling);
  if (on_text) {
    std::string echo;
    for (size_t i = 1; i < p.size(); ++i) echo += tokenizer.decode_piece(p[i - 1], p[i]);
    if (!echo.empty()) on_text(echo);
  }

  // Sequence::take_sampled's rule: stop at max_tokens, at EOS or BOS (llama2.c's stories models
  // delimit stories with BOS), or when the context is full.
  int64_t prev = p.back();
  auto take = [&](int64_t next) {
    if (static_cast<int64_t>(result.tokens.size()) >= options.max_tokens) {
      result.stop_reason = "length";
      return false;
    }
    if (next == tokenizer.eos_id() || next == tokenizer.bos_id()) {
      result.stop_reason = "eos";
      return false;
    }
    result.tokens.push_back(next);
    auto piece = tokenizer.decode_piece(prev, next);
    prev = next;
    result.text += piece;
    if (on_text && !piece.empty()) on_text(piece);
    if (static_cast<int64_t>(result.tokens.size()) == options.max_tokens) {
      result.stop_reason = "length";
      return false;
    }
    if (cache.length() >= cache.capacity()) {
      result.stop_reason = "context";
      return false;
    }
    return true;
  };

  auto start = std::chrono::steady_clock::now();
  const float* logits = engine.prefill(p, cache, options.arch);
  int64_t next = sample_logits(sampler, options.sampling, logits, vocab);
  result.prefill_seconds = seconds_since(start);
  bool running = take(next);

  start = std::chrono::steady_clock::now();
  while (running) {
    logits = engine.decode(next, cache, options.arch);
    next = sample_logits(sampler, options.sampling, logits, vocab);
    ++result.decode_steps;
    running = take(next);
  }
  result.decode_seconds = seconds_since(start);
  return result;
}

}  // namespace flextron::runtime
