// generate() on the fast CPU runtime (runtime/fast_decoder.h): the same prompt handling,
// sampling, stopping rule and timings as runtime::generate, with the engine's batched prefill and
// its decode steps in place of TransformerImpl::forward.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/fast_decoder.h"
#include "runtime/generate.h"

namespace flextron::runtime {

// Whether `model` as loaded can run on the fast runtime with `options` (either family, fp32 on
// the CPU, no dynamic router); `why`, when given, receives the reason when it cannot.
bool fast_runtime_supports(const model::TransformerImpl& model, const GenerateOptions& options,
                           std::string* why = nullptr);

// The runtime choice of --runtime: "auto" is the fast runtime where fast_runtime_supports says
// so and the torch forward elsewhere; "fast" is the fast runtime or an error saying why not;
// "torch" is the torch forward. Throws flextron::Error for any other choice.
bool use_fast_runtime(const std::string& choice, const model::TransformerImpl& model,
                      const GenerateOptions& options = {});

// With options.router (one that routes_on_host()), `model` prefills the prompt (see Sequence) and
// must be given. Throws flextron::Error when the prompt does not fit the model's context.
GenerateResult generate_fast(FastDecoder& engine, const text::Tokenizer& tokenizer,
                             const std::string& prompt, const GenerateOptions& options,
                             model::TransformerImpl* model = nullptr,
                             const std::function<void(const std::string&)>& on_text = {});

// Perplexity of `tokens` on the engine at `arch` (empty = full): non-overlapping windows of
// `window` tokens, each scoring its tokens 1.. from the ones before it in the window;
// exp(mean negative log-likelihood). Throws flextron::Error for fewer than 2 tokens.
double engine_perplexity(FastDecoder& engine, const std::vector<int64_t>& tokens, int64_t window,
                         const model::Architecture& arch = {});

}  // namespace flextron::runtime
