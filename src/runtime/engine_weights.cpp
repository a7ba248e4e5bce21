#include "runtime/engine_weights.h"

#include <algorithm>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

namespace {

constexpr const char* kWhere = "fast runtime";

}  // namespace

void EngineWeights::embedding_row(int64_t token, float* out) const {
  const MatrixView& E = embedding_;
  if (E.blocks == nullptr) {
    std::copy(E.data + token * E.ld, E.data + token * E.ld + E.cols, out);
    return;
  }
  // A padded last block dequantizes past `cols`: through a scratch row.
  if (E.nb * qk::kBlock == E.cols) {
    qk::dequantize_weights(format_, E.blocks + token * E.row_bytes, E.nb, out);
    return;
  }
  std::vector<float> row(static_cast<size_t>(E.nb * qk::kBlock));
  qk::dequantize_weights(format_, E.blocks + token * E.row_bytes, E.nb, row.data());
  std::copy(row.begin(), row.begin() + E.cols, out);
}

EngineWeights::EngineWeights(const model::TransformerImpl& model, qk::WeightFormat format)
    : config_(model.config()), format_(format) {
  const auto state = model.state();
  const bool quantized = this->quantized();
  // A parameter as fp32 contiguous CPU memory of the expected shape; shared when it already is.
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape) {
    auto it = state.find(name);
    if (it == state.end()) fail(kWhere, "the model has no tensor '" + name + "'");
    auto t = it->second.detach().to(torch::kCPU, torch::kFloat).contiguous();
    if (t.sizes() != c10::IntArrayRef(shape))
      fail(kWhere, "tensor '" + name + "' has shape " + c10::str(t.sizes()) +
                       ", its config implies " + c10::str(c10::IntArrayRef(shape)));
    return t;
  };
  auto take = [&](const std::string& name, std::vector<int64_t> shape) -> const float* {
    auto t = tensor(name, std::move(shape));
    bytes_ += t.numel() * static_cast<int64_t>(sizeof(float));
    held_.push_back(t);
    return t.data_ptr<float>();
  };
  // [rows, cols] fp32 as blocks, row after row (panels: then reordered, see quant_kernels.h).
  auto quantize = [&](const torch::Tensor& t, int64_t rows, int64_t cols, bool panels) {
    MatrixView m;
    m.rows = rows;
    m.cols = cols;
    m.nb = qk::blocks_for(cols);
    m.row_bytes = m.nb * qk::block_bytes(format_);
    std::vector<uint8_t> rowwise(static_cast<size_t>(rows * m.row_bytes));
    const float* src = t.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r)
      qk::quantize_weights(format_, src + r * cols, cols, rowwise.data() + r * m.row_bytes);
    if (panels) {
      std::vector<uint8_t> out(rowwise.size());
      qk::to_panels(format_, rowwise.data(), rows, m.nb, out.data());
      rowwise.swap(out);
    }
    bytes_ += static_cast<int64_t>(rowwise.size());
    blocks_.push_back(std::move(rowwise));
    m.blocks = blocks_.back().data();
    return m;
  };
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    if (quantized) return quantize(tensor(name, {rows, cols}), rows, cols, false);
    return MatrixView{take(name, {rows, cols}), rows, cols, cols};
  };
  // o and down ([rows = hidden, cols = inputs]): fp32 stored as the transpose [cols, rows];
  // quantized in panels.
  auto transposed = [&](const std::string& name, int64_t rows, int64_t cols) {
    if (quantized) return quantize(tensor(name, {rows, cols}), rows, cols, true);
    take(name, {rows, cols});
    auto t = held_.back().t().contiguous();
    held_.back() = t;  // the copy, not the model's tensor
    return MatrixView{t.data_ptr<float>(), cols, rows, rows};
  };

  const int64_t hidden = config_.hidden_size, hd = config_.head_dim();
  const bool gpt = this->gpt();
  // A bias where the model has one (GPT: every projection and norm; Llama variants: q/k/v,
  // o), null elsewhere.
  auto bias_if = [&](bool present, const std::string& name, int64_t size) -> const float* {
    return present ? take(name, {size}) : nullptr;
  };
  auto bias = [&](const std::string& name, int64_t size) {
    return bias_if(gpt, name, size);
  };
  const bool qkv_bias = config_.has_qkv_bias(), o_bias = config_.has_o_bias();
  embedding_ = matrix("model.embed_tokens.weight", config_.vocab_size, hidden);
  if (gpt)
    positions_ = take("model.embed_positions.weight", {config_.max_position_embeddings, hidden});
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    EngineLayer layer;
    layer.mlp = config_.layer_mlp(l);
    layer.kv_groups = config_.layer_kv_heads(l);
    const int64_t kv_dim = layer.kv_groups * hd, q_dim = kv_dim * config_.group_size();
    layer.attn_norm = take(p + "input_layernorm.weight", {hidden});
    layer.mlp_norm = take(p + "post_attention_layernorm.weight", {hidden});
    layer.q = matrix(p + "self_attn.q_proj.weight", q_dim, hidden);
    layer.k = matrix(p + "self_attn.k_proj.weight", kv_dim, hidden);
    layer.v = matrix(p + "self_attn.v_proj.weight", kv_dim, hidden);
    layer.o_t = transposed(p + "self_attn.o_proj.weight", hidden, q_dim);
    if (!gpt) layer.gate = matrix(p + "mlp.gate_proj.weight", layer.mlp, hidden);
    layer.up = matrix(p + "mlp.up_proj.weight", layer.mlp, hidden);
    layer.down_t = transposed(p + "mlp.down_proj.weight", hidden, layer.mlp);
    layer.attn_norm_bias = bias(p + "input_layernorm.bias", hidden);
    layer.mlp_norm_bias = bias(p + "post_attention_layernorm.bias", hidden);
    layer.q_bias = bias_if(qkv_bias, p + "self_attn.q_proj.bias", q_dim);
    layer.k_bias = bias_if(qkv_bias, p + "self_attn.k_proj.bias", kv_dim);
    layer.v_bias = bias_if(qkv_bias, p + "self_attn.v_proj.bias", kv_dim);
    layer.o_bias = bias_if(o_bias, p + "self_attn.o_proj.bias", hidden);
    layer.up_bias = bias(p + "mlp.up_proj.bias", layer.mlp);
    layer.down_bias = bias(p + "mlp.down_proj.bias", hidden);
    layers_.push_back(layer);
  }
  final_norm_ = take("model.norm.weight", {hidden});
  final_norm_bias_ = bias("model.norm.bias", hidden);
  lm_head_ = config_.tie_word_embeddings ? embedding_
                                         : matrix("lm_head.weight", config_.vocab_size, hidden);
  if (!gpt) {
    // The torch forward's tables (float64, rounded once), so both runtimes rotate alike.
    std::tie(rope_cos_, rope_sin_) = model::rope_tables(config_, -1, torch::kDouble);
    rope_cos_ = rope_cos_.to(torch::kFloat).contiguous();
    rope_sin_ = rope_sin_.to(torch::kFloat).contiguous();
  }
}

}  // namespace flextron::runtime
