// The weights of a model as the fast inference engine (runtime/fast_decoder.h) reads them: plain
// row-major fp32 matrices, taken once from a loaded model by parameter name. Both families: the
// GPT family adds biases (null for Llama), LayerNorm biases and learned positions.
//
// Every elastic width is a prefix (FLEXTRON.md section 1), and the engine keeps every prefix
// contiguous: the first k rows of q/k/v/gate/up ([out, in], shared with the model) are, and o
// and down, whose prefixes are columns ([hidden, in]: read with the full row length as lda they
// are strided, measured 30% slower at half width), are stored transposed ([in, hidden]) so that
// their prefixes are the first k rows too.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "model/config.h"
#include "model/transformer.h"

namespace flextron::runtime {

// Row r of a [rows, cols] matrix starts at data + r * ld (ld >= cols). With int8 weights the
// same matrix also as int8 (same layout) and one scale per row: W[r, j] ~ int8[r * ld + j] *
// scale[r], scale[r] = max_j |W[r, j]| / 127 (symmetric, per row, so every column prefix of a
// row shares its scale).
struct MatrixView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;
  const int8_t* int8 = nullptr;  // null unless the weights were quantized
  const float* scale = nullptr;  // [rows]
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
  // flextron::Error naming the tensor when one is missing or misshapen. With `int8`, every
  // matrix (q, k, v, o, gate, up, down and the LM head) is also quantized to int8 with per-row
  // scales, and the engine reads those instead (the embedding rows and norm weights stay fp32).
  explicit EngineWeights(const model::TransformerImpl& model, bool int8 = false);

  const model::ModelConfig& config() const { return config_; }
  const EngineLayer& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const float* embedding() const { return embedding_; }   // [vocab, hidden]
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
  bool int8() const { return int8_; }
  // Bytes of the fp32 weights (each shared matrix counted once; the model's own memory when
  // shared) and of the int8 copies with their scales (0 without int8).
  int64_t bytes() const { return bytes_; }
  int64_t int8_bytes() const { return int8_bytes_; }

 private:
  model::ModelConfig config_;
  std::vector<torch::Tensor> held_;  // keeps every tensor read from alive
  std::vector<EngineLayer> layers_;
  const float* embedding_ = nullptr;
  MatrixView lm_head_;
  const float* final_norm_ = nullptr;
  const float* final_norm_bias_ = nullptr;
  const float* positions_ = nullptr;
  torch::Tensor rope_cos_, rope_sin_;
  int64_t bytes_ = 0, int8_bytes_ = 0;
  bool int8_ = false;
  void quantize(MatrixView& m);
};

}  // namespace flextron::runtime
