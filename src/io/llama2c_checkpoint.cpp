#include "io/llama2c_checkpoint.h"

#include <array>
#include <cmath>
#include <fstream>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "model/transformer.h"

namespace flextron::io {

namespace {

constexpr int kHeaderInts = 7;

// Interleaved (2i, 2i+1) rotary pairs -> HF's half split (i, i + hd/2), per head.
torch::Tensor interleaved_to_half(const torch::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols});
}

torch::Tensor half_to_interleaved(const torch::Tensor& w, int64_t heads) {
  const int64_t rows = w.size(0), cols = w.size(1);
  return w.view({heads, 2, rows / heads / 2, cols}).transpose(1, 2).reshape({rows, cols});
}

std::string layer_name(int64_t l, const char* suffix) {
  return "model.layers." + std::to_string(l) + "." + suffix;
}

// The arrays of the file in order: name (or per-layer suffix), shape, per-layer or not.
struct Entry {
  std::string name;
  std::vector<int64_t> shape;
  bool per_layer;
};

std::vector<Entry> layout(const model::ModelConfig& c) {
  const int64_t dim = c.hidden_size, hidden = c.intermediate_size;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim();
  return {
      {"model.embed_tokens.weight", {c.vocab_size, dim}, false},
      {"input_layernorm.weight", {dim}, true},
      {"self_attn.q_proj.weight", {dim, dim}, true},
      {"self_attn.k_proj.weight", {kv_dim, dim}, true},
      {"self_attn.v_proj.weight", {kv_dim, dim}, true},
      {"self_attn.o_proj.weight", {dim, dim}, true},
      {"post_attention_layernorm.weight", {dim}, true},
      {"mlp.gate_proj.weight", {hidden, dim}, true},
      {"mlp.down_proj.weight", {dim, hidden}, true},
      {"mlp.up_proj.weight", {hidden, dim}, true},
      {"model.norm.weight", {dim}, false},
  };
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

}  // namespace

Llama2cCheckpoint read_llama2c_checkpoint(const std::filesystem::path& path) {
  const std::string where = path.string();
  if (!std::filesystem::is_regular_file(path)) fail(where, "not a file (missing checkpoint?)");
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(where, "cannot open");
  std::array<int32_t, kHeaderInts> h{};
  if (file_size < static_cast<int64_t>(sizeof(h)))
    fail(where, "file of " + std::to_string(file_size) +
                    " bytes is shorter than the 28-byte llama2.c header");
  in.read(reinterpret_cast<char*>(h.data()), sizeof(h));

  model::ModelConfig c;
  c.family = model::Family::Llama;
  c.hidden_size = h[0];
  c.intermediate_size = h[1];
  c.num_hidden_layers = h[2];
  c.num_attention_heads = h[3];
  c.num_key_value_heads = h[4];
  c.tie_word_embeddings = h[5] > 0;
  c.vocab_size = std::abs(static_cast<int64_t>(h[5]));
  c.max_position_embeddings = h[6];
  c.rms_norm_eps = 1e-5;  // hard-coded in llama2.c's run.c
  c.rope_theta = 10000.0;
  c.validate(where + " (llama2.c header: dim=" + std::to_string(h[0]) +
             " hidden_dim=" + std::to_string(h[1]) + " n_layers=" + std::to_string(h[2]) +
             " n_heads=" + std::to_string(h[3]) + " n_kv_heads=" + std::to_string(h[4]) +
             " vocab_size=" + std::to_string(h[5]) + " seq_len=" + std::to_string(h[6]) + ")");

  // The file's size is fully determined by the header: check before reading anything.
  const auto entries = layout(c);
  int64_t floats = 0;
  for (const auto& e : entries) floats += numel(e.shape) * (e.per_layer ? c.num_hidden_layers : 1);
  const int64_t rope_floats = c.max_position_embeddings * c.head_dim();  // cos + sin halves
  floats += rope_floats;
  if (!c.tie_word_embeddings) floats += c.vocab_size * c.hidden_size;
  const int64_t expected = static_cast<int64_t>(sizeof(h)) + floats * 4;
  if (file_size != expected)
    fail(where, "file is " + std::to_string(file_size) + " bytes but its header implies " +
                    std::to_string(expected) + " bytes (truncated or not a llama2.c checkpoint)");

  auto read_tensor = [&](const std::vector<int64_t>& shape) {
    auto t = torch::empty(shape, torch::kFloat);
    in.read(reinterpret_cast<char*>(t.data_ptr<float>()), t.numel() * 4);
    if (!in) fail(where, "read failed");
    return t;
  };

  Llama2cCheckpoint ck;
  ck.config = c;
  for (const auto& e : entries) {
    if (!e.per_layer) {
      ck.tensors[e.name] = read_tensor(e.shape);
      continue;
    }
    for (int64_t l = 0; l < c.num_hidden_layers; ++l)
      ck.tensors[layer_name(l, e.name.c_str())] = read_tensor(e.shape);
  }
  in.seekg(rope_floats * 4, std::ios::cur);  // RoPE tables: recomputed, not stored
  if (!c.tie_word_embeddings)
    ck.tensors["lm_head.weight"] = read_tensor({c.vocab_size, c.hidden_size});

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    auto& wq = ck.tensors[layer_name(l, "self_attn.q_proj.weight")];
    auto& wk = ck.tensors[layer_name(l, "self_attn.k_proj.weight")];
    wq = interleaved_to_half(wq, c.num_attention_heads);
    wk = interleaved_to_half(wk, c.num_key_value_heads);
  }
  return ck;
}

void write_llama2c_checkpoint(const std::filesystem::path& path, const model::ModelConfig& c,
                              const TensorMap& tensors) {
  const std::string where = path.string();
  if (c.family != model::Family::Llama) fail(where, "llama2.c only runs Llama-family models");
  if (c.heterogeneous())
    fail(where, "llama2.c needs the same widths in every layer; this model has per-layer widths");
  if (c.rope_theta != 10000.0)
    fail(where,
         "llama2.c hard-codes rope_theta 10000, this model uses " + std::to_string(c.rope_theta));
  if (c.rope_scaling.kind != model::RopeScaling::Kind::None)
    fail(where, "llama2.c has no rope_scaling; this model rescales its rotary frequencies");
  if (c.has_qkv_bias() || c.has_o_bias())
    fail(where, "llama2.c has no projection biases; this model has attention biases");
  if (c.head_dim() * c.num_attention_heads != c.hidden_size)
    fail(where, "llama2.c needs heads * head_dim == dim; this model's head_dim is " +
                    std::to_string(c.head_dim()));
  auto get = [&](const std::string& name, const std::vector<int64_t>& shape) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(where, "model has no tensor '" + name + "'");
    if (it->second.sizes() != c10::IntArrayRef(shape))
      fail(where, "tensor '" + name +
                      "' does not have the uniform shape llama2.c needs "
                      "(per-layer widths cannot be exported to llama2.c)");
    return it->second.to(torch::kCPU, torch::kFloat).contiguous();
  };
  std::array<int32_t, kHeaderInts> h{
      static_cast<int32_t>(c.hidden_size),
      static_cast<int32_t>(c.intermediate_size),
      static_cast<int32_t>(c.num_hidden_layers),
      static_cast<int32_t>(c.num_attention_heads),
      static_cast<int32_t>(c.num_key_value_heads),
      static_cast<int32_t>(c.tie_word_embeddings ? c.vocab_size : -c.vocab_size),
      static_cast<int32_t>(c.max_position_embeddings)};
  write_file_atomically(path, [&](std::ostream& out) {
    auto put = [&](const torch::Tensor& t) {
      out.write(reinterpret_cast<const char*>(t.data_ptr<float>()), t.numel() * 4);
    };
    out.write(reinterpret_cast<const char*>(h.data()), sizeof(h));
    for (const auto& e : layout(c)) {
      if (!e.per_layer) {
        put(get(e.name, e.shape));
        continue;
      }
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        auto t = get(layer_name(l, e.name.c_str()), e.shape);
        if (e.name == "self_attn.q_proj.weight")
          t = half_to_interleaved(t, c.num_attention_heads).contiguous();
        if (e.name == "self_attn.k_proj.weight")
          t = half_to_interleaved(t, c.num_key_value_heads).contiguous();
        put(t);
      }
    }
    auto [cos, sin] = model::rope_tables(c);  // as llama2.c's export writes them
    put(cos.contiguous());
    put(sin.contiguous());
    if (!c.tie_word_embeddings) put(get("lm_head.weight", {c.vocab_size, c.hidden_size}));
  });
}

}  // namespace flextron::io
