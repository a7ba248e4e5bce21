// flextron quantize: a model directory with its matrices stored as llama.cpp's Q8_0 or Q4_0
// blocks (io/model_dir.h's save_model_dir), so it is a quarter (q8_0) or an eighth (q4_0) of
// the fp32 bytes on disk and the fast runtime runs it in that format by default.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/quant_kernels.h"

namespace flextron::pipeline {

struct QuantizeResult {
  int64_t bytes_before = 0;        // model.safetensors (or its shards) of the source
  int64_t bytes_after = 0;         // the quantized model.safetensors
  std::vector<std::string> notes;  // what was carried over or left out, one sentence each
};

// Reads `from` (any model directory load_model_dir reads; an already quantized one too) and
// writes `to`: config.json, the quantized model.safetensors, the tokenizer, flextron.json and
// the routers (router.json, router.safetensors). latency.json is left out: it was profiled for the
// source's weight format, and a budget needs one profiled for this one (flextron profile --quant
// FORMAT). Throws flextron::Error for f32 as the format, a GPT-2 model, or `to` equal to `from`.
QuantizeResult quantize_model_dir(const std::filesystem::path& from,
                                  const std::filesystem::path& to,
                                  runtime::qk::WeightFormat format);

}  // namespace flextron::pipeline
