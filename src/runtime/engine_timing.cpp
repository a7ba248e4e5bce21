#include "runtime/engine_timing.h"

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/timing.h"

#include <torch/torch.h>

namespace flextron::runtime {

namespace {
// One routed sequence with `context` positions: the router's prefill on the torch forward, its
// cache copied to the engine; the architecture its decode steps pass (the cache's KV widths).
std::pair<EngineCache, model::Architecture> routed_context(FastDecoder& engine,
                                                           model::TransformerImpl& model,
                                                           model::LayerRouter& router,
                                                           const std::vector<int64_t>& tokens) {
  c10::InferenceMode inference;
  const auto n = static_cast<int64_t>(tokens.size());
  auto cache = model.make_cache(1, n + 1, nullptr, /*lazy=*/true);
  model.forward(torch::tensor(tokens, torch::kLong).to(model.device()).unsqueeze(0), &cache,
                nullptr, &router);
  auto engine_cache = engine.cache_from(cache, n + 1);
  auto arch = model::full_architecture(engine.config());
  for (size_t l = 0; l < arch.size(); ++l)
    arch[l].kv_groups = engine_cache.kv_groups(static_cast<int64_t>(l));
  return {std::move(engine_cache), arch};
}
}  // namespace

double engine_decode_ms(FastDecoder& engine, const model::Architecture& arch, int64_t context,
                        int64_t batch, int64_t warmup, int64_t repeats, model::LayerRouter* router,
                        model::TransformerImpl* model) {
  const auto& config = engine.config();
  if (context < 0 || context + 1 > config.max_position_embeddings)
    fail("latency", "context " + std::to_string(context) + " outside [0, " +
                        std::to_string(config.max_position_embeddings - 1) + "]");
  if (batch < 1 || batch > engine.max_rows())
    fail("latency", "batch " + std::to_string(batch) + " outside [1, " +
                        std::to_string(engine.max_rows()) + "] (the engine's rows per pass)");
  // Random tokens: the time of a step does not depend on which tokens they are.
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int64_t> token(0, config.vocab_size - 1);
  if (router != nullptr) {
    if (batch != 1 || model == nullptr || context < 1)
      fail("latency", "a routed decode step is timed for one sequence with a context, on a model");
    std::vector<int64_t> prompt(static_cast<size_t>(context));
    for (auto& t : prompt) t = token(rng);
    auto [cache, routed] = routed_context(engine, *model, *router, prompt);
    const int64_t next = token(rng);
    auto step = [&, &cache = cache, &routed = routed] {
      cache.truncate(context);
      engine.decode(next, cache, routed, router);
    };
    return median(time_calls_ms(step, warmup, repeats));
  }
  std::vector<EngineCache> caches;
  std::vector<EngineCache*> pointers;
  caches.reserve(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    caches.push_back(engine.make_cache(context + 1, arch));
    std::vector<int64_t> prompt(static_cast<size_t>(context));
    for (auto& t : prompt) t = token(rng);
    if (context > 0) engine.prefill(prompt, caches.back(), arch);
  }
  for (auto& c : caches) pointers.push_back(&c);
  std::vector<int64_t> next(static_cast<size_t>(batch));
  for (auto& t : next) t = token(rng);
  auto step = [&] {
    for (auto& c : caches) c.truncate(context);
    if (batch == 1)
      engine.decode(next[0], caches[0], arch);
    else
      engine.decode_batch(next, pointers, arch);
  };
  return median(time_calls_ms(step, warmup, repeats));
}

}  // namespace flextron::runtime
