#include "runtime/engine_weights.h"

#include <string>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

namespace {

constexpr const char* kWhere = "fast runtime";

}  // namespace

void EngineWeights::quantize(MatrixView& m) {
  auto w = torch::from_blob(const_cast<float*>(m.data), {m.rows, m.ld}, torch::kFloat);
  auto scale = (w.abs().amax(1) / 127.0).clamp_min(1e-30).contiguous();
  auto q = torch::round(w / scale.unsqueeze(1)).clamp(-127, 127).to(torch::kChar).contiguous();
  m.int8 = q.data_ptr<int8_t>();
  m.scale = scale.data_ptr<float>();
  int8_bytes_ += q.numel() + scale.numel() * static_cast<int64_t>(sizeof(float));
  held_.push_back(q);
  held_.push_back(scale);
}

EngineWeights::EngineWeights(const model::TransformerImpl& model, bool int8)
    : config_(model.config()), int8_(int8) {
  const auto state = model.state();
  // A parameter as fp32 contiguous CPU memory of the expected shape; shared when it already is.
  auto take = [&](const std::string& name, std::vector<int64_t> shape) -> const float* {
    auto it = state.find(name);
    if (it == state.end()) fail(kWhere, "the model has no tensor '" + name + "'");
    auto t = it->second.detach().to(torch::kCPU, torch::kFloat).contiguous();
    if (t.sizes() != c10::IntArrayRef(shape))
      fail(kWhere, "tensor '" + name + "' has shape " + c10::str(t.sizes()) +
                       ", its config implies " + c10::str(c10::IntArrayRef(shape)));
    bytes_ += t.numel() * static_cast<int64_t>(sizeof(float));
    held_.push_back(t);
    return t.data_ptr<float>();
  };
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    return MatrixView{take(name, {rows, cols}), rows, cols, cols};
  };
  // [rows, cols] stored as its transpose [cols, rows].
  auto transposed = [&](const std::string& name, int64_t rows, int64_t cols) {
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
  auto bias = [&](const std::string& name, int64_t size) { return bias_if(gpt, name, size); };
  const bool qkv_bias = config_.has_qkv_bias(), o_bias = config_.has_o_bias();
  embedding_ = take("model.embed_tokens.weight", {config_.vocab_size, hidden});
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
  lm_head_ = config_.tie_word_embeddings
                 ? MatrixView{embedding_, config_.vocab_size, hidden, hidden}
                 : matrix("lm_head.weight", config_.vocab_size, hidden);
  if (int8_) {
    torch::NoGradGuard no_grad;
    for (auto& layer : layers_)
      for (auto* m :
           {&layer.q, &layer.k, &layer.v, &layer.o_t, &layer.gate, &layer.up, &layer.down_t})
        if (m->data != nullptr) quantize(*m);
    quantize(lm_head_);
  }
  if (!gpt) {
    // The torch forward's tables (float64, rounded once), so both runtimes rotate alike.
    std::tie(rope_cos_, rope_sin_) = model::rope_tables(config_, -1, torch::kDouble);
    rope_cos_ = rope_cos_.to(torch::kFloat).contiguous();
    rope_sin_ = rope_sin_.to(torch::kFloat).contiguous();
  }
}

}  // namespace flextron::runtime
