// GPT-2 test fixtures: a random checkpoint in HuggingFace's own layout (Conv1D weights [in, out],
// fused c_attn, learned positions, biases everywhere) with the config.json a HF directory has,
// and an independent reference forward written from GPT-2's definition on those tensors. No
// real GPT-2 checkpoint is in ../shared/data; this reference is the check that our blocks and
// our conversion of HF's layout compute GPT-2.
#pragma once

#include <cmath>
#include <filesystem>
#include <string>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace flextron::testing {

struct Gpt2Shape {
  int64_t hidden = 48, layers = 3, heads = 6, inner = 192, vocab = 97, positions = 64;
  bool tied = true;
};

inline nlohmann::json gpt2_hf_config(const Gpt2Shape& s) {
  // Field names and defaults of transformers' GPT2Config (n_inner set, as distilgpt2-like
  // configs have; activation "gelu_new" is GPT-2's own).
  return {{"architectures", {"GPT2LMHeadModel"}},
          {"model_type", "gpt2"},
          {"n_embd", s.hidden},
          {"n_layer", s.layers},
          {"n_head", s.heads},
          {"n_inner", s.inner},
          {"n_positions", s.positions},
          {"n_ctx", s.positions},
          {"vocab_size", s.vocab},
          {"layer_norm_epsilon", 1e-5},
          {"activation_function", "gelu_new"},
          {"tie_word_embeddings", s.tied},
          {"bos_token_id", s.vocab - 1},
          {"eos_token_id", s.vocab - 1},
          {"scale_attn_weights", true}};
}

// Random HF GPT-2 tensors (float64), named as GPT2LMHeadModel.save_pretrained writes them; with
// `model_prefix` false, as GPT2Model writes them ("h.0.attn...", plus the old causal-mask
// buffers attn.bias / attn.masked_bias).
inline io::TensorMap random_gpt2_tensors(const Gpt2Shape& s, uint64_t seed,
                                         bool model_prefix = true) {
  torch::manual_seed(seed);
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  const std::string p = model_prefix ? "transformer." : "";
  auto randn = [&](std::vector<int64_t> shape, double scale) {
    return torch::randn(shape, f64) * scale;
  };
  io::TensorMap t;
  t[p + "wte.weight"] = randn({s.vocab, s.hidden}, 0.3);
  t[p + "wpe.weight"] = randn({s.positions, s.hidden}, 0.3);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string h = p + "h." + std::to_string(l) + ".";
    for (const char* ln : {"ln_1", "ln_2"}) {
      t[h + ln + ".weight"] = 1.0 + randn({s.hidden}, 0.2);
      t[h + ln + ".bias"] = randn({s.hidden}, 0.2);
    }
    t[h + "attn.c_attn.weight"] = randn({s.hidden, 3 * s.hidden}, 0.25);
    t[h + "attn.c_attn.bias"] = randn({3 * s.hidden}, 0.2);
    t[h + "attn.c_proj.weight"] = randn({s.hidden, s.hidden}, 0.15);
    t[h + "attn.c_proj.bias"] = randn({s.hidden}, 0.1);
    t[h + "mlp.c_fc.weight"] = randn({s.hidden, s.inner}, 0.2);
    t[h + "mlp.c_fc.bias"] = randn({s.inner}, 0.2);
    t[h + "mlp.c_proj.weight"] = randn({s.inner, s.hidden}, 0.1);
    t[h + "mlp.c_proj.bias"] = randn({s.hidden}, 0.1);
    if (!model_prefix) {
      t[h + "attn.bias"] = torch::ones({1, 1, s.positions, s.positions}).tril();
      t[h + "attn.masked_bias"] = torch::full({}, -1e4);
    }
  }
  t[p + "ln_f.weight"] = 1.0 + randn({s.hidden}, 0.2);
  t[p + "ln_f.bias"] = randn({s.hidden}, 0.2);
  if (!s.tied) t["lm_head.weight"] = randn({s.vocab, s.hidden}, 0.3);
  return t;
}

// Writes a HF GPT-2 model directory (config.json + model.safetensors).
inline void write_gpt2_dir(const std::filesystem::path& dir, const Gpt2Shape& s,
                           const io::TensorMap& tensors) {
  std::filesystem::create_directories(dir);
  io::write_text_atomically(dir / "config.json", gpt2_hf_config(s).dump(2));
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
}

// GPT-2's forward, straight from its definition on HF-layout tensors: logits [T, vocab] for
// tokens [T] at positions 0..T-1.
//   h = wte[x] + wpe[pos]
//   per block: a = LN1(h); [q | k | v] = a C_attn + b; heads of hidden / n_head columns;
//              h += softmax(q k^T / sqrt(hd) + causal) v C_proj + b
//              h += gelu_tanh(LN2(h) C_fc + b) C_proj + b
//   logits = LN_f(h) (lm_head or wte)^T
inline torch::Tensor gpt2_reference_logits(const io::TensorMap& t, const Gpt2Shape& s,
                                           const torch::Tensor& tokens) {
  const std::string p = t.count("transformer.wte.weight") ? "transformer." : "";
  auto w = [&](const std::string& name) {
    return t.at(p + name);
  };
  const int64_t steps = tokens.size(0), hd = s.hidden / s.heads;
  auto layer_norm = [&](const torch::Tensor& x, const std::string& name) {
    auto mean = x.mean(-1, true);
    auto var = (x - mean).pow(2).mean(-1, true);
    return (x - mean) / torch::sqrt(var + 1e-5) * w(name + ".weight") + w(name + ".bias");
  };
  auto gelu_tanh = [](const torch::Tensor& x) {
    return 0.5 * x * (1.0 + torch::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x.pow(3))));
  };
  auto h = w("wte.weight").index_select(0, tokens) + w("wpe.weight").narrow(0, 0, steps);
  auto causal = torch::ones({steps, steps}, torch::kBool).triu(1);
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string b = "h." + std::to_string(l) + ".";
    auto qkv = torch::matmul(layer_norm(h, b + "ln_1"), w(b + "attn.c_attn.weight")) +
               w(b + "attn.c_attn.bias");
    auto heads = [&](int64_t part) {  // [heads, T, hd]
      return qkv.narrow(1, part * s.hidden, s.hidden).view({steps, s.heads, hd}).transpose(0, 1);
    };
    auto scores = torch::matmul(heads(0), heads(1).transpose(1, 2)) / std::sqrt(double(hd));
    scores = scores.masked_fill(causal, -INFINITY);
    auto y = torch::matmul(torch::softmax(scores, -1), heads(2))
                 .transpose(0, 1)
                 .reshape({steps, s.hidden});
    h = h + torch::matmul(y, w(b + "attn.c_proj.weight")) + w(b + "attn.c_proj.bias");
    auto m = gelu_tanh(torch::matmul(layer_norm(h, b + "ln_2"), w(b + "mlp.c_fc.weight")) +
                       w(b + "mlp.c_fc.bias"));
    h = h + torch::matmul(m, w(b + "mlp.c_proj.weight")) + w(b + "mlp.c_proj.bias");
  }
  auto head = s.tied ? w("wte.weight") : t.at("lm_head.weight");
  return torch::matmul(layer_norm(h, "ln_f"), head.t());
}

}  // namespace flextron::testing
