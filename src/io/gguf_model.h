// A model as a GGUF file llama.cpp reads: its "llama" architecture's metadata keys and tensor
// names, or "deci" (the same blocks, per-layer head_count / head_count_kv / feed_forward_length)
// when widths differ by layer (an extracted sub-network), or "gpt2" for the GPT-2 family, and
// the tokenizer embedded. See docs/gguf.md for the keys.
#pragma once

#include <filesystem>

#include <torch/types.h>

#include "core/quant_blocks.h"
#include "model/transformer.h"
#include "text/tokenizer.h"

namespace flextron::io {

// Writes `model` (any architecture; extract a sub-network first to write a budget's) as GGUF
// v3 with F32 or F16 matrices (norms stay F32, as llama.cpp's converter writes them).
void save_gguf_model(const std::filesystem::path& path, model::TransformerImpl& model,
                     const text::Tokenizer* tokenizer, torch::Dtype dtype);
// The same with the matrices (token_embd and output included) as F32, F16, BF16, or Q8_0 / Q4_0
// (llama.cpp's reference rounding; a matrix whose rows are not a multiple of 32 is written F16).
void save_gguf_model(const std::filesystem::path& path, model::TransformerImpl& model,
                     const text::Tokenizer* tokenizer, quant::GgmlType matrix_type);

// Reads a llama-, deci- or gpt2-architecture GGUF file (any tensor type read_gguf reads,
// dequantized to float32) into model directory `out`
// (config.json, model.safetensors, and tokenizer.bin or vocab.json + merges.txt). Throws
// flextron::Error naming the file and the missing, mistyped or out-of-range key or tensor.
void import_gguf_model(const std::filesystem::path& path, const std::filesystem::path& out);

}  // namespace flextron::io
