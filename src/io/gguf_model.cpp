#include "io/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <set>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/gguf_tokenizer.h"
#include "io/model_dir.h"
#include "model/rope_factors.h"
#include "text/chat_template.h"

namespace flextron::io {

using nlohmann::json;
using quant::GgmlType;

namespace {

const std::string kSpace = "\xE2\x96\x81";  // SentencePiece's U+2581 for ' '

// llama.cpp's token types.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6 };

// llama.cpp's Llama graph rotates interleaved pairs (2i, 2i+1); HF's weights rotate halves
// (i, i + hd/2). Its converter permutes the rows of q_proj and k_proj within each head so that
// both compute the same function; `to_gguf` false undoes it.
torch::Tensor permute_rotary(const torch::Tensor& w, int64_t heads, bool to_gguf) {
  const int64_t hd = w.size(0) / heads;
  const auto cols = w.sizes().slice(1).vec();
  std::vector<int64_t> split = {heads, 2, hd / 2}, interleaved = {heads, hd / 2, 2};
  split.insert(split.end(), cols.begin(), cols.end());
  interleaved.insert(interleaved.end(), cols.begin(), cols.end());
  return w.reshape(to_gguf ? split : interleaved).transpose(1, 2).reshape(w.sizes()).contiguous();
}

// Our HF names -> llama.cpp's, for layer tensors ("model.layers.N." + suffix).
const std::vector<std::pair<std::string, std::string>> kLayerNames = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"}};

// GPT-2's layer tensors that only change name (the fused attn_qkv is built apart).
const std::vector<std::pair<std::string, std::string>> kGpt2LayerNames = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"input_layernorm.bias", "attn_norm.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"post_attention_layernorm.bias", "ffn_norm.bias"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.up_proj.bias", "ffn_up.bias"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.down_proj.bias", "ffn_down.bias"}};
const char* const kQkv[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};

std::string token_text(const text::Tokenizer& t, int64_t id) {
  if (id == t.bos_id()) return "<s>";
  if (id == t.eos_id()) return "</s>";
  std::string piece = t.piece(id);
  if (piece == "\n<s>\n") return "<s>";
  if (piece == "\n</s>\n") return "</s>";
  for (size_t at = piece.find(' '); at != std::string::npos;
       at = piece.find(' ', at + kSpace.size()))
    piece.replace(at, 1, kSpace);
  return piece;
}

int32_t token_type(const std::string& text, int64_t id, const text::Tokenizer& t) {
  if (id == t.bos_id() || id == t.eos_id()) return kControl;
  if (text == "<unk>") return kUnknown;
  if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>') return kByte;
  return kNormal;
}

void add_tokenizer(GgufMetadata& m, const text::Tokenizer& t) {
  // Byte-level BPE is llama.cpp's "gpt2" vocabulary; everything else (SentencePiece, llama2.c,
  // a byte-fallback tokenizer.json) goes as "llama" with scores.
  const bool bpe = t.byte_level();
  const auto merges = bpe ? t.merges() : std::vector<std::string>{};
  json tokens = json::array(), scores = json::array(), types = json::array();
  for (int64_t id = 0; id < t.vocab_size(); ++id) {
    const std::string text = bpe ? t.piece(id) : token_text(t, id);
    tokens.push_back(text);
    scores.push_back(t.score(id));
    types.push_back(bpe ? (t.is_special(id) ? kControl : kNormal) : token_type(text, id, t));
  }
  m["tokenizer.ggml.model"] = gguf_string(bpe ? "gpt2" : "llama");
  m["tokenizer.ggml.tokens"] = gguf_array(GgufType::String, tokens);
  m["tokenizer.ggml.token_type"] = gguf_array(GgufType::Int32, types);
  if (bpe) {
    m["tokenizer.ggml.merges"] = gguf_array(GgufType::String, merges);
    // Which regexes llama.cpp pre-tokenizes with; "default" when the pipeline is not a known one.
    m["tokenizer.ggml.pre"] = gguf_string(t.gguf_pre().empty() ? "default" : t.gguf_pre());
  } else {
    m["tokenizer.ggml.scores"] = gguf_array(GgufType::Float32, scores);
    m["tokenizer.ggml.unknown_token_id"] = gguf_u32(0);
  }
  m["tokenizer.ggml.bos_token_id"] = gguf_u32(static_cast<uint32_t>(t.bos_id()));
  m["tokenizer.ggml.eos_token_id"] = gguf_u32(static_cast<uint32_t>(t.eos_id()));
  m["tokenizer.ggml.add_bos_token"] = GgufValue{GgufType::Bool, GgufType::String, true};
  // The model's own chat template, else ours (what `flextron serve` renders for it), so that
  // llama.cpp chats with the export as we do.
  const auto chat = t.chat_template();
  m["tokenizer.chat_template"] = gguf_string(chat.empty() ? text::flextron_chat_template() : chat);
}

bool is_constant(const std::vector<int64_t>& values) {
  return std::adjacent_find(values.begin(), values.end(), std::not_equal_to<>()) == values.end();
}

// A per-layer value: one u32 when every layer agrees, else an array (llama.cpp reads both).
GgufValue per_layer(const std::vector<int64_t>& values) {
  if (is_constant(values)) return gguf_u32(static_cast<uint32_t>(values.front()));
  return gguf_array(GgufType::Int32, values);  // llama.cpp reads int32 or float32 arrays
}

// GGUF stores these settings as f32: read back the decimal they were written from (1e-5, not
// 9.99999975e-06), which is what the original config said to 7 significant digits.
double f32_decimal(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.7g", v);
  return std::stod(buf);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

void save_gguf_model(const std::filesystem::path& path, model::TransformerImpl& model,
                     const text::Tokenizer* tokenizer, torch::Dtype dtype) {
  if (dtype != torch::kFloat && dtype != torch::kHalf) fail("--gguf-type", "use f32 or f16");
  save_gguf_model(path, model, tokenizer, dtype == torch::kFloat ? GgmlType::F32 : GgmlType::F16);
}

void save_gguf_model(const std::filesystem::path& path, model::TransformerImpl& model,
                     const text::Tokenizer* tokenizer, GgmlType matrix_type) {
  const auto& c = model.config();
  // llama.cpp's llama_ftype of the file.
  const std::map<GgmlType, uint32_t> file_types = {{GgmlType::F32, 0},
                                                   {GgmlType::F16, 1},
                                                   {GgmlType::Q4_0, 2},
                                                   {GgmlType::Q8_0, 7},
                                                   {GgmlType::BF16, 32}};
  if (!file_types.count(matrix_type))
    fail("--gguf-type", std::string(quant::type_info(matrix_type).name) +
                            " is not written (f32, f16, bf16, q8_0, q4_0)");
  GgufFile file;
  auto& m = file.metadata;
  std::vector<int64_t> ffn, heads, kv_heads;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    ffn.push_back(c.layer_mlp(l));
    kv_heads.push_back(c.layer_kv_heads(l));
    heads.push_back(c.layer_kv_heads(l) * c.group_size());
  }
  // llama.cpp's "llama" architecture takes one width for all layers; "deci" (DeciLM /
  // Nemotron-NAS: the same blocks and tensor names) takes widths per layer. Its "gpt2" reads
  // per-layer arrays too but sizes every layer's tensors by layer 0 (docs/gguf.md).
  const bool uniform = is_constant(ffn) && is_constant(kv_heads);
  const std::string arch = c.gpt() ? "gpt2" : uniform ? "llama" : "deci";
  if (c.gpt() && (!uniform || heads.front() * c.head_dim() != c.hidden_size))
    std::fprintf(stderr,
                 "warning: %s: llama.cpp's gpt2 loader needs every layer at the same MLP width "
                 "and all heads; this file loads in flextron but not in llama.cpp\n",
                 path.string().c_str());
  m["general.architecture"] = gguf_string(arch);
  m["general.name"] = gguf_string(path.stem().string());
  m["general.alignment"] = gguf_u32(32);
  m["general.file_type"] = gguf_u32(file_types.at(matrix_type));
  m[arch + ".context_length"] = gguf_u32(static_cast<uint32_t>(c.max_position_embeddings));
  m[arch + ".embedding_length"] = gguf_u32(static_cast<uint32_t>(c.hidden_size));
  m[arch + ".block_count"] = gguf_u32(static_cast<uint32_t>(c.num_hidden_layers));
  m[arch + ".feed_forward_length"] = per_layer(ffn);
  m[arch + ".attention.head_count"] = per_layer(heads);
  m[arch + ".vocab_size"] = gguf_u32(static_cast<uint32_t>(c.vocab_size));
  if (c.gpt()) {
    m[arch + ".attention.layer_norm_epsilon"] = gguf_f32(static_cast<float>(c.rms_norm_eps));
    if (c.head_dim_override > 0) {
      m[arch + ".attention.key_length"] = gguf_u32(static_cast<uint32_t>(c.head_dim()));
      m[arch + ".attention.value_length"] = gguf_u32(static_cast<uint32_t>(c.head_dim()));
    }
  } else {
    m[arch + ".attention.head_count_kv"] = per_layer(kv_heads);
    m[arch + ".attention.key_length"] = gguf_u32(static_cast<uint32_t>(c.head_dim()));
    m[arch + ".attention.value_length"] = gguf_u32(static_cast<uint32_t>(c.head_dim()));
    m[arch + ".rope.dimension_count"] = gguf_u32(static_cast<uint32_t>(c.head_dim()));
    m[arch + ".rope.freq_base"] = gguf_f32(static_cast<float>(c.rope_theta));
    if (c.rope_scaling.kind == model::RopeScaling::Kind::Linear) {
      m[arch + ".rope.scaling.type"] = gguf_string("linear");
      m[arch + ".rope.scaling.factor"] = gguf_f32(static_cast<float>(c.rope_scaling.factor));
    }
    m[arch + ".attention.layer_norm_rms_epsilon"] = gguf_f32(static_cast<float>(c.rms_norm_eps));
  }
  if (tokenizer != nullptr) add_tokenizer(m, *tokenizer);

  torch::NoGradGuard no_grad;
  const auto state = model.state();
  const bool quantized = matrix_type == GgmlType::Q8_0 || matrix_type == GgmlType::Q4_0;
  auto add = [&](const std::string& name, torch::Tensor t) {
    // llama.cpp keeps 1-D tensors (norms, biases) in F32, and writes a matrix whose rows are
    // not whole 32-element blocks as F16 in a quantized file.
    auto type = t.dim() == 1 ? GgmlType::F32 : matrix_type;
    if (quantized && t.size(-1) % quant::kQK != 0) type = GgmlType::F16;
    file.tensors.push_back({name, t.detach().to(torch::kCPU), type});
  };
  add("token_embd.weight", state.at("model.embed_tokens.weight"));
  if (c.gpt()) add("position_embd.weight", state.at("model.embed_positions.weight"));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string ours = "model.layers." + std::to_string(l) + ".";
    const std::string theirs = "blk." + std::to_string(l) + ".";
    if (c.gpt()) {
      for (const auto& [suffix, name] : kGpt2LayerNames)
        add(theirs + name, state.at(ours + suffix));
      // attn_qkv: the q, k and v rows stacked (ggml's {hidden, 3 * width}).
      std::vector<torch::Tensor> w, b;
      for (const char* proj : kQkv) {
        w.push_back(state.at(ours + proj + ".weight"));
        b.push_back(state.at(ours + proj + ".bias"));
      }
      add(theirs + "attn_qkv.weight", torch::cat(w, 0));
      add(theirs + "attn_qkv.bias", torch::cat(b, 0));
      continue;
    }
    for (const auto& [suffix, name] : kLayerNames) {
      auto t = state.at(ours + suffix);
      if (suffix == "self_attn.q_proj.weight") t = permute_rotary(t, heads[l], true);
      if (suffix == "self_attn.k_proj.weight") t = permute_rotary(t, kv_heads[l], true);
      add(theirs + name, t);
    }
    // llama.cpp's llama graph adds optional attn_{q,k,v,output}.bias (Qwen2's q/k/v biases,
    // attention_bias); q/k biases follow their rows' rotary permutation.
    if (c.has_qkv_bias()) {
      add(theirs + "attn_q.bias",
          permute_rotary(state.at(ours + "self_attn.q_proj.bias"), heads[l], true));
      add(theirs + "attn_k.bias",
          permute_rotary(state.at(ours + "self_attn.k_proj.bias"), kv_heads[l], true));
      add(theirs + "attn_v.bias", state.at(ours + "self_attn.v_proj.bias"));
    }
    if (c.has_o_bias()) add(theirs + "attn_output.bias", state.at(ours + "self_attn.o_proj.bias"));
  }
  // Llama 3's scaling as llama.cpp's converter stores it: one divisor per frequency.
  if (c.rope_scaling.kind == model::RopeScaling::Kind::Llama3) {
    const auto factors = model::rope_frequency_factors(c);
    add("rope_freqs.weight", torch::tensor(factors, torch::kDouble).to(torch::kFloat));
  }
  add("output_norm.weight", state.at("model.norm.weight"));
  if (c.gpt()) add("output_norm.bias", state.at("model.norm.bias"));
  // llama.cpp's gpt2 loader before March 2025 requires output.weight even for tied embeddings
  // (its converter writes a copy of token_embd), so a GPT-2 file always has one.
  if (!c.tie_word_embeddings)
    add("output.weight", state.at("lm_head.weight"));
  else if (c.gpt())
    add("output.weight", state.at("model.embed_tokens.weight"));
  write_gguf(path, file);
}

static void import_gguf_unchecked(const std::filesystem::path& path,
                                  const std::filesystem::path& out);

// A metadata value of the wrong type that a typed read below does not name (nlohmann's
// type_error) still becomes a one-line Error naming the file.
void import_gguf_model(const std::filesystem::path& path, const std::filesystem::path& out) {
  try {
    import_gguf_unchecked(path, out);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("metadata value of the wrong type (") + e.what() + ")");
  }
}

static void import_gguf_unchecked(const std::filesystem::path& path,
                                  const std::filesystem::path& out) {
  auto file = read_gguf(path);
  const auto& m = file.metadata;
  auto get = [&](const std::string& key) -> const json& {
    auto it = m.find(key);
    if (it == m.end()) fail(path, "missing metadata key " + key);
    return it->second.value;
  };
  // Typed reads of the config keys: a wrong type or an out-of-range value is an error naming
  // the key (nlohmann's own conversions would cast a float, or throw type_error).
  auto value = [&](const std::string& key) -> const GgufValue& {
    auto it = m.find(key);
    if (it == m.end()) fail(path, "missing metadata key " + key);
    return it->second;
  };
  auto is_integer = [](GgufType t) {
    return t != GgufType::Float32 && t != GgufType::Float64 && t != GgufType::Bool &&
           t != GgufType::String && t != GgufType::Array;
  };
  auto positive_int = [&](const std::string& key, GgufType type, const json& v) -> int64_t {
    if (!is_integer(type)) fail(path, key + " must be an integer, got " + v.dump());
    if (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t{1} << 31))
      fail(path, key + " = " + v.dump() + " is implausibly large");
    const auto n = v.get<int64_t>();
    if (n <= 0) fail(path, key + " must be positive, got " + std::to_string(n));
    if (n > (int64_t{1} << 31)) fail(path, key + " = " + v.dump() + " is implausibly large");
    return n;
  };
  auto count = [&](const std::string& key) {
    const auto& v = value(key);
    return positive_int(key, v.type, v.value);
  };
  auto positive_real = [&](const std::string& key) {
    const auto& v = value(key);
    if (!v.value.is_number()) fail(path, key + " must be a number, got " + v.value.dump());
    const auto x = v.value.get<double>();
    if (!std::isfinite(x) || x <= 0) fail(path, key + " must be finite and positive");
    return x;
  };
  const auto& arch_value = value("general.architecture");
  if (arch_value.type != GgufType::String)
    fail(path, "general.architecture must be a string, got " + arch_value.value.dump());
  const auto arch = arch_value.value.get<std::string>();
  if (arch != "llama" && arch != "deci" && arch != "qwen2" && arch != "gpt2")
    fail(path, "general.architecture \"" + arch + "\" is not supported (llama, deci, qwen2, gpt2)");
  const bool gpt = arch == "gpt2";
  // llama.cpp's qwen2 graph rotates halves (NEOX) as HF does, so its converter leaves q/k rows
  // as they are; the llama graph rotates adjacent pairs and gets them permuted.
  const bool interleaved_rope = arch != "qwen2";
  auto unpermute = [&](const torch::Tensor& t, int64_t heads) {
    return interleaved_rope ? permute_rotary(t, heads, false) : t;
  };
  auto layer_values = [&](const std::string& key, int64_t layers) {
    const auto& v = value(key);
    std::vector<int64_t> out;
    if (v.type == GgufType::Array) {
      if (static_cast<int64_t>(v.value.size()) != layers)
        fail(path, key + " has " + std::to_string(v.value.size()) + " entries for " +
                       std::to_string(layers) + " layers");
      for (size_t l = 0; l < v.value.size(); ++l)
        out.push_back(positive_int(key + "[" + std::to_string(l) + "]", v.element, v.value[l]));
    } else {
      out.assign(static_cast<size_t>(layers), positive_int(key, v.type, v.value));
    }
    return out;
  };

  model::ModelConfig c;
  c.family = gpt ? model::Family::Gpt2 : model::Family::Llama;
  c.hidden_size = count(arch + ".embedding_length");
  c.num_hidden_layers = count(arch + ".block_count");
  c.max_position_embeddings = count(arch + ".context_length");
  if (c.max_position_embeddings > (int64_t{1} << 24))
    fail(path, arch + ".context_length " + std::to_string(c.max_position_embeddings) +
                   " is implausibly large (over 2^24)");
  // Every blk.N tensor must belong to a layer below block_count (a missing one is named below).
  for (const auto& t : file.tensors) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const auto dot = t.name.find('.', 4);
    const auto number = t.name.substr(4, dot == std::string::npos ? dot : dot - 4);
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos)
      fail(path, "tensor " + t.name + " has no layer number");
    if (number.size() > 9 || std::stoll(number) >= c.num_hidden_layers)
      fail(path, "tensor " + t.name + " belongs to layer " + number + " but " + arch +
                     ".block_count is " + std::to_string(c.num_hidden_layers));
  }
  const auto ffn = layer_values(arch + ".feed_forward_length", c.num_hidden_layers);
  const auto heads = layer_values(arch + ".attention.head_count", c.num_hidden_layers);
  // GPT-2 has one KV head per head (llama.cpp's default when head_count_kv is absent).
  const auto kv =
      gpt ? heads : layer_values(arch + ".attention.head_count_kv", c.num_hidden_layers);
  c.intermediate_size = *std::max_element(ffn.begin(), ffn.end());
  c.num_attention_heads = *std::max_element(heads.begin(), heads.end());
  c.num_key_value_heads = *std::max_element(kv.begin(), kv.end());
  for (size_t l = 0; l < heads.size(); ++l)
    if (heads[l] * c.num_key_value_heads != kv[l] * c.num_attention_heads)
      fail(path, "layer " + std::to_string(l) +
                     ": head_count / head_count_kv differs from the "
                     "other layers' (one group size is supported)");
  const std::string head_size_key = gpt ? ".attention.key_length" : ".rope.dimension_count";
  if (m.count(arch + head_size_key)) c.head_dim_override = count(arch + head_size_key);
  if (!gpt && c.head_dim_override % 2 != 0)
    fail(path,
         arch + ".rope.dimension_count must be even, got " + std::to_string(c.head_dim_override));
  if (!gpt && c.head_dim_override > 0 && m.count(arch + ".attention.key_length") &&
      count(arch + ".attention.key_length") != c.head_dim_override)
    fail(path, arch + ".rope.dimension_count differs from " + arch +
                   ".attention.key_length (partial rotary embeddings are not supported)");
  if (c.head_dim_override == c.hidden_size / c.num_attention_heads) c.head_dim_override = 0;
  if (m.count(arch + ".rope.freq_base"))
    c.rope_theta = f32_decimal(positive_real(arch + ".rope.freq_base"));
  c.rms_norm_eps = f32_decimal(positive_real(
      arch + (gpt ? ".attention.layer_norm_epsilon" : ".attention.layer_norm_rms_epsilon")));
  if (!gpt && m.count(arch + ".rope.scaling.type")) {
    const auto& type = value(arch + ".rope.scaling.type");
    const auto kind = type.value.is_string() ? type.value.get<std::string>() : type.value.dump();
    if (kind == "linear") {
      c.rope_scaling.kind = model::RopeScaling::Kind::Linear;
      c.rope_scaling.factor = f32_decimal(positive_real(arch + ".rope.scaling.factor"));
    } else if (kind != "none") {
      fail(path, arch + ".rope.scaling.type \"" + kind + "\" is not supported (none, linear)");
    }
  }
  if (!is_constant(ffn) || !is_constant(kv)) {
    c.layer_intermediate_sizes = ffn;
    c.layer_key_value_heads = kv;
  }
  c.validate(path.string());

  TensorMap tensors;
  for (auto& t : file.tensors) tensors[t.name] = t.data.to(torch::kFloat);
  // A tensor with the shape the metadata implies (checked before the model is allocated).
  std::set<std::string> used;
  auto take = [&](const std::string& name, const std::vector<int64_t>& shape) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(path, "missing tensor " + name);
    used.insert(name);
    if (it->second.sizes() != torch::IntArrayRef(shape))
      fail(path, "tensor " + name + " has shape " + shape_text(it->second.sizes().vec()) +
                     " but the metadata implies " + shape_text(shape));
    return it->second;
  };
  TensorMap state;
  const int64_t H = c.hidden_size;
  const auto embed_it = tensors.find("token_embd.weight");
  if (embed_it == tensors.end()) fail(path, "missing tensor token_embd.weight");
  c.vocab_size = embed_it->second.size(0);
  const auto embed = take("token_embd.weight", {c.vocab_size, H});
  state["model.embed_tokens.weight"] = embed;
  if (gpt)
    state["model.embed_positions.weight"] =
        take("position_embd.weight", {c.max_position_embeddings, H});
  const int64_t hd = c.head_dim();
  if (!gpt && tensors.count("rope_freqs.weight")) {
    const auto freqs = take("rope_freqs.weight", {hd / 2}).to(torch::kDouble).contiguous();
    const std::vector<double> factors(freqs.data_ptr<double>(),
                                      freqs.data_ptr<double>() + freqs.numel());
    auto scaling = model::llama3_scaling_from_factors(c, factors);
    if (!scaling)
      fail(path,
           "rope_freqs.weight holds per-frequency factors that no llama3 rope_scaling "
           "reproduces (other rope scalings are not supported)");
    c.rope_scaling = *scaling;
  }
  // Optional attention biases (llama.cpp's llama graph takes them when present).
  if (!gpt) {
    c.qkv_bias = tensors.count("blk.0.attn_q.bias") != 0;
    c.o_bias = tensors.count("blk.0.attn_output.bias") != 0;
  }
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string ours = "model.layers." + std::to_string(l) + ".";
    const std::string theirs = "blk." + std::to_string(l) + ".";
    const int64_t q_rows = heads[l] * hd, kv_rows = kv[l] * hd, f = ffn[l];
    if (!gpt && c.qkv_bias) {
      state[ours + "self_attn.q_proj.bias"] =
          unpermute(take(theirs + "attn_q.bias", {q_rows}), heads[l]);
      state[ours + "self_attn.k_proj.bias"] =
          unpermute(take(theirs + "attn_k.bias", {kv_rows}), kv[l]);
      state[ours + "self_attn.v_proj.bias"] = take(theirs + "attn_v.bias", {kv_rows});
    }
    if (!gpt && c.o_bias)
      state[ours + "self_attn.o_proj.bias"] = take(theirs + "attn_output.bias", {H});
    if (gpt) {
      const std::map<std::string, std::vector<int64_t>> shapes = {
          {"attn_norm.weight", {H}}, {"attn_norm.bias", {H}},  {"attn_output.weight", {H, q_rows}},
          {"attn_output.bias", {H}}, {"ffn_norm.weight", {H}}, {"ffn_norm.bias", {H}},
          {"ffn_up.weight", {f, H}}, {"ffn_up.bias", {f}},     {"ffn_down.weight", {H, f}},
          {"ffn_down.bias", {H}}};
      for (const auto& [suffix, name] : kGpt2LayerNames)
        state[ours + suffix] = take(theirs + name, shapes.at(name));
      // attn_qkv: the q, k and v rows stacked.
      const auto w = take(theirs + "attn_qkv.weight", {3 * q_rows, H});
      const auto b = take(theirs + "attn_qkv.bias", {3 * q_rows});
      for (int64_t part = 0; part < 3; ++part) {
        state[ours + kQkv[part] + ".weight"] = w.narrow(0, part * q_rows, q_rows).contiguous();
        state[ours + kQkv[part] + ".bias"] = b.narrow(0, part * q_rows, q_rows).contiguous();
      }
      continue;
    }
    const std::map<std::string, std::vector<int64_t>> shapes = {
        {"attn_norm.weight", {H}},           {"attn_q.weight", {q_rows, H}},
        {"attn_k.weight", {kv_rows, H}},     {"attn_v.weight", {kv_rows, H}},
        {"attn_output.weight", {H, q_rows}}, {"ffn_norm.weight", {H}},
        {"ffn_gate.weight", {f, H}},         {"ffn_up.weight", {f, H}},
        {"ffn_down.weight", {H, f}}};
    for (const auto& [suffix, name] : kLayerNames) {
      auto t = take(theirs + name, shapes.at(name));
      if (suffix == "self_attn.q_proj.weight") t = unpermute(t, heads[l]);
      if (suffix == "self_attn.k_proj.weight") t = unpermute(t, kv[l]);
      state[ours + suffix] = t;
    }
  }
  state["model.norm.weight"] = take("output_norm.weight", {H});
  if (gpt) state["model.norm.bias"] = take("output_norm.bias", {H});
  // Tied: no output.weight, or (GPT-2, see save_gguf_model) a bit-exact copy of token_embd.
  c.tie_word_embeddings = tensors.count("output.weight") == 0 ||
                          (gpt && take("output.weight", {c.vocab_size, H}).equal(embed));
  if (!c.tie_word_embeddings) state["lm_head.weight"] = take("output.weight", {c.vocab_size, H});

  // Every tensor in the file belongs to the model the metadata describes (llama.cpp refuses a
  // file with tensors it does not load, as we do).
  for (const auto& t : file.tensors)
    if (!used.count(t.name))
      fail(path, "tensor " + t.name + " is not part of the " + arch +
                     " model the metadata describes (an unknown or misnamed tensor)");

  std::unique_ptr<text::Tokenizer> tokenizer;
  if (m.count("tokenizer.ggml.model")) {
    // A working tokenizer, saved as an equivalent tokenizer.json (io/gguf_tokenizer.h).
    tokenizer = gguf_tokenizer(m, path.string());
    c.bos_token_id = get("tokenizer.ggml.bos_token_id").get<int64_t>();
    c.eos_token_id = get("tokenizer.ggml.eos_token_id").get<int64_t>();
    std::filesystem::create_directories(out);
  }
  model::Transformer result(c);
  result->load_state(state, path.string());
  save_model_dir(out, *result, tokenizer.get(), nullptr);
}

}  // namespace flextron::io
