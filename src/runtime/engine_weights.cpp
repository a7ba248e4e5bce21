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
  if (config_.family != model::Family::Llama)
    fail(kWhere,
         "only the Llama family runs on the fast CPU runtime (this model is GPT family: "
         "LayerNorm, GELU, learned positions); use the torch runtime");
  const auto state = model.state();
  // A parameter as fp32 contiguous CPU memory of the expected shape; shared when it already is.
  auto take = [&](const std::string& name, std::vector<int64_t> shape) -> const float* {
    auto it = state.find(name);
    if (it == state.end()) fail(kWhere, "the model has no tensor '" + name + "'");
    auto t = it->second.detach().to(torch::kCPU, torch::kFloat).contiguous();
    if (t.sizes() != c10::IntArrayRef(shape))
      fail(kWhere, "tensor '" + name + "' does not have the shape its config implies");
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
  embedding_ = take("model.embed_tokens.weight", {config_.vocab_size, hidden});
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
    layer.gate = matrix(p + "mlp.gate_proj.weight", layer.mlp, hidden);
    layer.up = matrix(p + "mlp.up_proj.weight", layer.mlp, hidden);
    layer.down_t = transposed(p + "mlp.down_proj.weight", hidden, layer.mlp);
    layers_.push_back(layer);
  }
  final_norm_ = take("model.norm.weight", {hidden});
  lm_head_ = config_.tie_word_embeddings
                 ? MatrixView{embedding_, config_.vocab_size, hidden, hidden}
                 : matrix("lm_head.weight", config_.vocab_size, hidden);
  if (int8_) {
    torch::NoGradGuard no_grad;
    for (auto& layer : layers_)
      for (auto* m :
           {&layer.q, &layer.k, &layer.v, &layer.o_t, &layer.gate, &layer.up, &layer.down_t})
        quantize(*m);
    quantize(lm_head_);
  }
  std::tie(rope_cos_, rope_sin_) = model::rope_tables(config_);
  rope_cos_ = rope_cos_.contiguous();
  rope_sin_ = rope_sin_.contiguous();
}

}  // namespace flextron::runtime
