// llama2.c's checkpoint format (karpathy/llama2.c, "version 0"): seven int32 (dim, hidden_dim,
// n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means a separate
// classifier follows), then float32 arrays: token embedding, attention RMSNorm weights, wq, wk,
// wv, wo, FFN RMSNorm weights, w1 (gate), w2 (down), w3 (up), final RMSNorm, the RoPE cos and sin
// tables (seq_len x head_dim/2 each), and the classifier if not shared.
//
// llama2.c rotates adjacent pairs (2i, 2i+1) while HF Llama rotates (i, i + head_dim/2); we
// store HF layout, so wq/wk rows are permuted on import and un-permuted on export (the same
// permutation HF's own Llama conversion applies).
#pragma once

#include <filesystem>

#include "io/safetensors.h"
#include "model/config.h"

namespace flextron::io {

struct Llama2cCheckpoint {
  model::ModelConfig config;
  TensorMap tensors;  // HF Llama names, HF rotary layout, float32
};

// Throws flextron::Error naming the file for a bad header or a size that disagrees with it.
Llama2cCheckpoint read_llama2c_checkpoint(const std::filesystem::path& path);

// Writes `tensors` (HF names and layout) for `config`. Throws if the model is not expressible in
// llama2.c (not the Llama family, rope_theta other than 10000, per-layer widths).
void write_llama2c_checkpoint(const std::filesystem::path& path, const model::ModelConfig& config,
                              const TensorMap& tensors);

}  // namespace flextron::io
