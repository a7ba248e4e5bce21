// The weights of a Llama-family model as the fast inference engine (runtime/fast_decoder.h)
// reads them: plain row-major fp32 matrices, taken once from a loaded model by parameter name.
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
  MatrixView gate, up;               // [mlp, hidden]
  MatrixView down_t;                 // down^T: [mlp, hidden] (an owned copy)
  int64_t mlp = 0;                   // this layer's full widths
  int64_t kv_groups = 0;
};

class EngineWeights {
 public:
  // Reads `model`'s parameters by their HF names. fp32 contiguous CPU parameters are shared with
  // the model (no copy), except o and down (transposed copies); any other dtype or device is
  // copied to fp32 CPU once. The engine holds what it reads, so the model may be dropped. Throws
  // flextron::Error for a model the engine does not run (the GPT family: LayerNorm, GELU, learned
  // positions and biases), so callers can fall back to TransformerImpl::forward. With `int8`, every
  // matrix (q, k, v, o, gate, up, down and the LM head) is also quantized to int8 with per-row
  // scales, and the engine reads those instead (the embedding rows and norm weights stay fp32).
  explicit EngineWeights(const model::TransformerImpl& model, bool int8 = false);

  const model::ModelConfig& config() const { return config_; }
  const EngineLayer& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const float* embedding() const { return embedding_; }   // [vocab, hidden]
  const MatrixView& lm_head() const { return lm_head_; }  // [vocab, hidden]; the embedding if tied
  const float* final_norm() const { return final_norm_; }
  // cos/sin(pos * theta^(-2i/head_dim)), [max_position_embeddings, head_dim / 2]
  // (model::rope_tables).
  const float* rope_cos() const { return rope_cos_.data_ptr<float>(); }
  const float* rope_sin() const { return rope_sin_.data_ptr<float>(); }
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
  torch::Tensor rope_cos_, rope_sin_;
  int64_t bytes_ = 0, int8_bytes_ = 0;
  bool int8_ = false;
  void quantize(MatrixView& m);
};

}  // namespace flextron::runtime
