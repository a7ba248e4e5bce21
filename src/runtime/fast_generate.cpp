#include "runtime/fast_generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "runtime/sequence.h"

namespace flextron::runtime {

bool fast_runtime_supports(const model::TransformerImpl& model, const GenerateOptions& options,
                           std::string* why) {
  std::string reason;
  if (!model.device().is_cpu())
    reason = "the fast runtime runs on the CPU only";
  else if (model.dtype() != torch::kFloat)
    reason = "the fast runtime runs fp32 weights only";
  else if (options.router != nullptr && !options.router->routes_on_host())
    reason = "this router routes on the torch runtime only";
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
                             model::TransformerImpl* model,
                             const std::function<void(const std::string&)>& on_text) {
  Sequence sequence(engine, tokenizer, encode_prompt(tokenizer, engine.config(), prompt),
                    options.max_tokens, options.sampling, options.arch, options.router, model);
  if (options.constraint) sequence.constrain(options.constraint->clone());
  if (!options.speculative.draft.empty()) sequence.speculate(options.speculative);
  return run_sequence(sequence, tokenizer, on_text);
}

}  // namespace flextron::runtime
