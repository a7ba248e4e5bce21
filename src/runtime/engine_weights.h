// The weights of a model as the fast inference engine (runtime/fast_decoder.h) reads them: plain
// row-major fp32 matrices, taken once from a loaded model by parameter name. Both families: the
// GPT family adds biases (null for Llama), LayerNorm biases and learned positions.
//
// Every elastic width is a prefix (FLEXTRON.md section 1), and the engine keeps every prefix
// contiguous: the first k rows of q/k/v/gate/up ([out, in], shared with the model) are, and o
// and down, whose prefixes are columns ([hidden, in]: read with the full row length as lda they
// are strided, measured 30% slower at half width), are stored transposed ([in, hidden]) so that
// their prefixes are the first k rows too.
//
// Quantized (EngineOptions::format q8_0 / q4_0, runtime/quant_kernels.h): every matrix, the
// embedding and the LM head are held only as blocks of 32 along the input dimension (no fp32
// copy): q/k/v/gate/up/LM head/embedding row-major, a prefix of rows reads a prefix of the
// bytes; o and down in panels of 8 block-columns of their [hidden, in] form, so a prefix of
// their inputs (heads, neurons) is a prefix of the panels. Norms, biases and RoPE tables stay
// fp32.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "model/config.h"
#include "model/transformer.h"
#include "runtime/quant_kernels.h"

namespace flextron::runtime {

// fp32: row r of a [rows, cols] matrix starts at data + r * ld (ld >= cols); o and down are
// their transposes ([in, hidden]: rows = inputs).
// Quantized: `blocks` in `format`. A row matrix [rows, cols]: row r is nb = blocks_for(cols)
// blocks at blocks + r * row_bytes. o and down (panels): their own [hidden, in] form, rows =
// hidden, cols = in, in qk::to_panels order.
struct MatrixView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;
  const uint8_t* blocks = nullptr;  // null for fp32
  int64_t nb = 0;
  int64_t row_bytes = 0;
};

struct EngineLayer {
  const float* attn_norm = nullptr;  // [hidden]
  const float* mlp_norm = nullptr;   // [hidden]
  MatrixView q, k, v;                // [heads * head_dim, hidden], [kv * head_dim, hidden]
  MatrixView o_t;                    // o^T: [heads * head_dim, hidden] (an owned copy)
  MatrixView gate, up;               // [mlp, hidden]; no gate in the GPT family
  MatrixView down_t;                 // down^T: [mlp, hidden] (an owned copy)
  // GPT family only (null for Llama): LayerNorm biases [hidden], projection biases (q/k/v/up
  // [out], sliced with their rows; o and down [hidden], whole at every width).
  const float* attn_norm_bias = nullptr;
  const float* mlp_norm_bias = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  const float *up_bias = nullptr, *down_bias = nullptr;
  int64_t mlp = 0;  // this layer's full widths
  int64_t kv_groups = 0;
};

class EngineWeights {
 public:
  // Reads `model`'s parameters by their names. fp32 contiguous CPU parameters are shared with
  // the model (no copy), except o and down (transposed copies); any other dtype or device is
  // copied to fp32 CPU once. The engine holds what it reads, so the model may be dropped. Throws
  // flextron::Error naming the tensor when one is missing or misshapen. With a block `format`,
  // every matrix, the embedding and the LM head are quantized once (llama.cpp's reference
  // rounding) and only the blocks are kept: the model's fp32 matrices are not read again.
  explicit EngineWeights(const model::TransformerImpl& model,
                         qk::WeightFormat format = qk::WeightFormat::F32);

  const model::ModelConfig& config() const { return config_; }
  const EngineLayer& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  // Token `token`'s embedding row [hidden] into `out` (dequantized when quantized).
  void embedding_row(int64_t token, float* out) const;
  const MatrixView& embedding() const { return embedding_; }  // [vocab, hidden]
  const MatrixView& lm_head() const { return lm_head_; }  // [vocab, hidden]; the embedding if tied
  const float* final_norm() const { return final_norm_; }
  // GPT family: the final LayerNorm's bias and the learned positions [max_position_embeddings,
  // hidden]; null for Llama, whose positions are the RoPE tables below.
  const float* final_norm_bias() const { return final_norm_bias_; }
  const float* positions() const { return positions_; }
  bool gpt() const { return config_.family == model::Family::Gpt2; }
  // cos/sin(pos * theta^(-2i/head_dim)), [max_position_embeddings, head_dim / 2]
  // (model::rope_tables); null for the GPT family.
  const float* rope_cos() const {
    return rope_cos_.defined() ? rope_cos_.data_ptr<float>() : nullptr;
  }
  const float* rope_sin() const {
    return rope_sin_.defined() ? rope_sin_.data_ptr<float>() : nullptr;
  }
  qk::WeightFormat format() const { return format_; }
  bool quantized() const { return format_ != qk::WeightFormat::F32; }
  // Bytes of the weights the engine reads (each shared matrix counted once; for fp32 the
  // model's own memory where shared): blocks, norms, biases, positions.
  int64_t bytes() const { return bytes_; }

 private:
  model::ModelConfig config_;
  std::vector<torch::Tensor> held_;  // keeps every tensor read from alive
  std::vector<EngineLayer> layers_;
  std::vector<std::vector<uint8_t>> blocks_;  // the quantized matrices
  MatrixView embedding_, lm_head_;
  const float* final_norm_ = nullptr;
  const float* final_norm_bias_ = nullptr;
  const float* positions_ = nullptr;
  torch::Tensor rope_cos_, rope_sin_;
  int64_t bytes_ = 0;
  qk::WeightFormat format_ = qk::WeightFormat::F32;
};

}  // namespace flextron::runtime
