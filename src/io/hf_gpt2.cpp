#include "io/hf_gpt2.h"

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::io {

namespace {

std::string ours(int64_t layer, const std::string& suffix) {
  return "model.layers." + std::to_string(layer) + "." + suffix;
}
std::string hf(int64_t layer, const std::string& suffix) {
  return "transformer.h." + std::to_string(layer) + "." + suffix;
}

// Whole-model tensors that only change name.
const std::vector<std::pair<std::string, std::string>> kGlobalNames = {
    {"model.embed_tokens.weight", "transformer.wte.weight"},
    {"model.embed_positions.weight", "transformer.wpe.weight"},
    {"model.norm.weight", "transformer.ln_f.weight"},
    {"model.norm.bias", "transformer.ln_f.bias"}};

// Per-layer tensors: our suffix, HF's suffix, whether the weight is stored transposed.
struct LayerName {
  const char* ours;
  const char* hf;
  bool transposed;
};
const std::vector<LayerName> kLayerNames = {
    {"input_layernorm.weight", "ln_1.weight", false},
    {"input_layernorm.bias", "ln_1.bias", false},
    {"post_attention_layernorm.weight", "ln_2.weight", false},
    {"post_attention_layernorm.bias", "ln_2.bias", false},
    {"self_attn.o_proj.weight", "attn.c_proj.weight", true},
    {"self_attn.o_proj.bias", "attn.c_proj.bias", false},
    {"mlp.up_proj.weight", "mlp.c_fc.weight", true},
    {"mlp.up_proj.bias", "mlp.c_fc.bias", false},
    {"mlp.down_proj.weight", "mlp.c_proj.weight", true},
    {"mlp.down_proj.bias", "mlp.c_proj.bias", false}};

const torch::Tensor& need(const TensorMap& m, const std::string& name, const std::string& where) {
  auto it = m.find(name);
  if (it == m.end()) fail(where, "missing tensor '" + name + "'");
  return it->second;
}

}  // namespace

TensorMap gpt2_to_hf(const TensorMap& state, const model::ModelConfig& c) {
  const std::string where = "GPT-2 export";
  TensorMap out;
  for (const auto& [mine, theirs] : kGlobalNames) out[theirs] = need(state, mine, where);
  if (!c.tie_word_embeddings) out["lm_head.weight"] = need(state, "lm_head.weight", where);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const auto& n : kLayerNames) {
      const auto& t = need(state, ours(l, n.ours), where);
      out[hf(l, n.hf)] = n.transposed ? t.t().contiguous() : t;
    }
    // c_attn = [Wq; Wk; Wv]^T: columns q | k | v.
    std::vector<torch::Tensor> weights, biases;
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
      weights.push_back(need(state, ours(l, std::string("self_attn.") + p + ".weight"), where));
      biases.push_back(need(state, ours(l, std::string("self_attn.") + p + ".bias"), where));
    }
    out[hf(l, "attn.c_attn.weight")] = torch::cat(weights, 0).t().contiguous();
    out[hf(l, "attn.c_attn.bias")] = torch::cat(biases, 0);
  }
  return out;
}

TensorMap gpt2_from_hf(const TensorMap& stored, const model::ModelConfig& c,
                       const std::string& where) {
  // GPT2Model.save_pretrained writes "h.0.attn...", GPT2LMHeadModel "transformer.h.0.attn...".
  TensorMap hf_names;
  for (const auto& [name, t] : stored) {
    const bool prefixed = name.rfind("transformer.", 0) == 0 || name == "lm_head.weight";
    hf_names[prefixed ? name : "transformer." + name] = t;
  }
  TensorMap out;
  auto take = [&](const std::string& name) {
    auto it = hf_names.find(name);
    if (it == hf_names.end()) fail(where, "missing tensor '" + name + "'");
    auto t = it->second;
    hf_names.erase(it);
    return t;
  };
  for (const auto& [mine, theirs] : kGlobalNames) out[mine] = take(theirs);
  if (hf_names.count("lm_head.weight") != 0) out["lm_head.weight"] = take("lm_head.weight");
  const int64_t hd = c.head_dim();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const auto& n : kLayerNames) {
      auto t = take(hf(l, n.hf));
      if (n.transposed) {
        if (t.dim() != 2)
          fail(where, "tensor '" + hf(l, n.hf) + "' must be a matrix, got " +
                          std::to_string(t.dim()) + " dimensions");
        t = t.t().contiguous();
      }
      out[ours(l, n.ours)] = t;
    }
    const std::string w_name = hf(l, "attn.c_attn.weight"), b_name = hf(l, "attn.c_attn.bias");
    auto w = take(w_name), b = take(b_name);
    const int64_t width = c.layer_kv_heads(l) * hd;  // one KV head per query head
    if (w.dim() != 2 || w.size(0) != c.hidden_size || w.size(1) != 3 * width)
      fail(where, "tensor '" + w_name + "' must be [" + std::to_string(c.hidden_size) + ", " +
                      std::to_string(3 * width) + "] (Conv1D: [hidden, q | k | v])");
    if (b.dim() != 1 || b.size(0) != 3 * width)
      fail(where, "tensor '" + b_name + "' must have " + std::to_string(3 * width) + " entries");
    const char* projections[] = {"q_proj", "k_proj", "v_proj"};
    for (int64_t part = 0; part < 3; ++part) {
      const std::string base = std::string("self_attn.") + projections[part];
      out[ours(l, base + ".weight")] = w.narrow(1, part * width, width).t().contiguous();
      out[ours(l, base + ".bias")] = b.narrow(0, part * width, width).contiguous();
    }
    // The causal-mask buffers that older GPT-2 files carry.
    hf_names.erase(hf(l, "attn.bias"));
    hf_names.erase(hf(l, "attn.masked_bias"));
  }
  // Whatever is left is not GPT-2's: name the first (load_state names its own surprises too).
  if (!hf_names.empty())
    fail(where, "unexpected tensor '" + hf_names.begin()->first +
                    "' (not part of a GPT-2 model "
                    "with this config)");
  return out;
}

}  // namespace flextron::io
