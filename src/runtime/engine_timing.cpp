#include "runtime/engine_timing.h"

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/timing.h"
#include "runtime/sequence.h"

namespace flextron::runtime {

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
    auto routed = routed_prefill(engine, *model, *router, prompt, context + 1);
    const int64_t next = token(rng);
    auto step = [&] {
      routed.cache.truncate(context);
      engine.decode(next, routed.cache, routed.arch, router);
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
