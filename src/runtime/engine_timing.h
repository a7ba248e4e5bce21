// Timing one decode step on the fast runtime, as the latency profiler and eval need it: the
// counterpart of route::measure_decode_ms (the torch forward) for runtime/fast_decoder.h.
#pragma once

#include <cstdint>

#include "model/elastic_space.h"
#include "runtime/fast_decoder.h"

namespace flextron::runtime {

// Median milliseconds of one decode step of `batch` sequences at `arch` (empty = full), each
// with `context` positions already cached, after `warmup` untimed steps: every timed step writes
// position `context` again. Throws flextron::Error for a context outside the model or a batch
// outside [1, engine.max_rows()]. With a dynamic router (batch 1), `model`'s forward prefills
// the context as a routed sequence does (runtime/sequence.h) and every timed step routes.
double engine_decode_ms(FastDecoder& engine, const model::Architecture& arch, int64_t context,
                        int64_t batch, int64_t warmup, int64_t repeats,
                        model::LayerRouter* router = nullptr,
                        model::TransformerImpl* model = nullptr);

}  // namespace flextron::runtime
