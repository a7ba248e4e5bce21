#include "io/gguf_model.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/model_dir.h"

namespace flextron::io {

using nlohmann::json;

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
  const auto merges = t.merges();
  const bool bpe = !merges.empty();
  json tokens = json::array(), scores = json::array(), types = json::array();
  for (int64_t id = 0; id < t.vocab_size(); ++id) {
    const std::string text = bpe ? t.piece(id) : token_text(t, id);
    tokens.push_back(text);
    scores.push_back(t.score(id));
    types.push_back(bpe ? (id == t.eos_id() ? kControl : kNormal) : token_type(text, id, t));
  }
  m["tokenizer.ggml.model"] = gguf_string(bpe ? "gpt2" : "llama");
  m["tokenizer.ggml.tokens"] = gguf_array(GgufType::String, tokens);
  m["tokenizer.ggml.token_type"] = gguf_array(GgufType::Int32, types);
  if (bpe) {
    m["tokenizer.ggml.merges"] = gguf_array(GgufType::String, merges);
  } else {
    m["tokenizer.ggml.scores"] = gguf_array(GgufType::Float32, scores);
    m["tokenizer.ggml.unknown_token_id"] = gguf_u32(0);
  }
  m["tokenizer.ggml.bos_token_id"] = gguf_u32(static_cast<uint32_t>(t.bos_id()));
  m["tokenizer.ggml.eos_token_id"] = gguf_u32(static_cast<uint32_t>(t.eos_id()));
  m["tokenizer.ggml.add_bos_token"] = GgufValue{GgufType::Bool, GgufType::String, true};
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

// A vocabulary as lists, for writing tokenizer.bin from a GGUF file's llama vocabulary.
class VocabList : public text::Tokenizer {
 public:
  VocabList(std::vector<std::string> pieces, std::vector<float> scores, int64_t bos, int64_t eos)
      : pieces_(std::move(pieces)), scores_(std::move(scores)), bos_(bos), eos_(eos) {}
  std::vector<int64_t> encode(const std::string&, bool) const override { return {}; }
  std::string decode_piece(int64_t, int64_t) const override { return {}; }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return eos_; }
  std::string piece(int64_t id) const override { return pieces_.at(static_cast<size_t>(id)); }
  float score(int64_t id) const override { return scores_.at(static_cast<size_t>(id)); }
  std::string file_name() const override { return "tokenizer.bin"; }
  void save(const std::filesystem::path& path) const override {
    text::save_llama2c_tokenizer(*this, path);
  }

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  int64_t bos_, eos_;
};

}  // namespace

void save_gguf_model(const std::filesystem::path& path, model::TransformerImpl& model,
                     const text::Tokenizer* tokenizer, torch::Dtype dtype) {
  const auto& c = model.config();
  if (dtype != torch::kFloat && dtype != torch::kHalf) fail("--gguf-type", "use f32 or f16");
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
  m["general.file_type"] = gguf_u32(dtype == torch::kFloat ? 0 : 1);  // ALL_F32 / MOSTLY_F16
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
    m[arch + ".attention.layer_norm_rms_epsilon"] = gguf_f32(static_cast<float>(c.rms_norm_eps));
  }
  if (tokenizer != nullptr) add_tokenizer(m, *tokenizer);

  torch::NoGradGuard no_grad;
  const auto state = model.state();
  auto add = [&](const std::string& name, torch::Tensor t) {
    // llama.cpp's converter keeps 1-D tensors (norms, biases) in F32.
    t = t.detach().to(torch::kCPU, t.dim() == 1 ? torch::kFloat : dtype);
    file.tensors.push_back({name, t});
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

void import_gguf_model(const std::filesystem::path& path, const std::filesystem::path& out) {
  auto file = read_gguf(path);
  const auto& m = file.metadata;
  auto get = [&](const std::string& key) -> const json& {
    auto it = m.find(key);
    if (it == m.end()) fail(path, "missing metadata key " + key);
    return it->second.value;
  };
  const auto arch = get("general.architecture").get<std::string>();
  if (arch != "llama" && arch != "deci" && arch != "gpt2")
    fail(path, "general.architecture \"" + arch + "\" is not supported (llama, deci, gpt2)");
  const bool gpt = arch == "gpt2";
  auto layer_values = [&](const std::string& key, int64_t layers) {
    const auto& v = get(key);
    std::vector<int64_t> out;
    if (v.is_array()) {
      if (static_cast<int64_t>(v.size()) != layers)
        fail(path, key + " has " + std::to_string(v.size()) + " entries for " +
                       std::to_string(layers) + " layers");
      for (const auto& e : v) out.push_back(e.get<int64_t>());
    } else {
      out.assign(static_cast<size_t>(layers), v.get<int64_t>());
    }
    return out;
  };

  model::ModelConfig c;
  c.family = gpt ? model::Family::Gpt2 : model::Family::Llama;
  c.hidden_size = get(arch + ".embedding_length").get<int64_t>();
  c.num_hidden_layers = get(arch + ".block_count").get<int64_t>();
  c.max_position_embeddings = get(arch + ".context_length").get<int64_t>();
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
  if (m.count(arch + head_size_key)) c.head_dim_override = get(arch + head_size_key).get<int64_t>();
  if (c.head_dim_override == c.hidden_size / c.num_attention_heads) c.head_dim_override = 0;
  if (m.count(arch + ".rope.freq_base"))
    c.rope_theta = f32_decimal(get(arch + ".rope.freq_base").get<double>());
  c.rms_norm_eps = f32_decimal(
      get(arch + (gpt ? ".attention.layer_norm_epsilon" : ".attention.layer_norm_rms_epsilon"))
          .get<double>());
  if (!is_constant(ffn) || !is_constant(kv)) {
    c.layer_intermediate_sizes = ffn;
    c.layer_key_value_heads = kv;
  }

  TensorMap tensors;
  for (auto& t : file.tensors) tensors[t.name] = t.data.to(torch::kFloat);
  auto take = [&](const std::string& name) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(path, "missing tensor " + name);
    return it->second;
  };
  TensorMap state;
  const auto embed = take("token_embd.weight");
  c.vocab_size = embed.size(0);
  state["model.embed_tokens.weight"] = embed;
  if (gpt) state["model.embed_positions.weight"] = take("position_embd.weight");
  const int64_t hd = c.head_dim();
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string ours = "model.layers." + std::to_string(l) + ".";
    const std::string theirs = "blk." + std::to_string(l) + ".";
    if (gpt) {
      for (const auto& [suffix, name] : kGpt2LayerNames) state[ours + suffix] = take(theirs + name);
      const auto w = take(theirs + "attn_qkv.weight"), b = take(theirs + "attn_qkv.bias");
      const int64_t width = heads[l] * hd;
      if (w.size(0) != 3 * width || b.size(0) != 3 * width)
        fail(path, theirs + "attn_qkv has " + std::to_string(w.size(0)) + " rows, " +
                       std::to_string(heads[l]) + " heads of " + std::to_string(hd) + " need " +
                       std::to_string(3 * width));
      for (int64_t part = 0; part < 3; ++part) {
        state[ours + kQkv[part] + ".weight"] = w.narrow(0, part * width, width).contiguous();
        state[ours + kQkv[part] + ".bias"] = b.narrow(0, part * width, width).contiguous();
      }
      continue;
    }
    for (const auto& [suffix, name] : kLayerNames) {
      auto t = take(theirs + name);
      if (suffix == "self_attn.q_proj.weight") t = permute_rotary(t, heads[l], false);
      if (suffix == "self_attn.k_proj.weight") t = permute_rotary(t, kv[l], false);
      state[ours + suffix] = t;
    }
  }
  state["model.norm.weight"] = take("output_norm.weight");
  if (gpt) state["model.norm.bias"] = take("output_norm.bias");
  // Tied: no output.weight, or (GPT-2, see save_gguf_model) a bit-exact copy of token_embd.
  c.tie_word_embeddings = tensors.count("output.weight") == 0 ||
                          (gpt && torch::equal(tensors.at("output.weight"), embed));
  if (!c.tie_word_embeddings) state["lm_head.weight"] = take("output.weight");

  std::unique_ptr<text::Tokenizer> tokenizer;
  if (m.count("tokenizer.ggml.model")) {
    const auto kind = get("tokenizer.ggml.model").get<std::string>();
    const auto tokens = get("tokenizer.ggml.tokens").get<std::vector<std::string>>();
    c.bos_token_id = get("tokenizer.ggml.bos_token_id").get<int64_t>();
    c.eos_token_id = get("tokenizer.ggml.eos_token_id").get<int64_t>();
    std::filesystem::create_directories(out);
    if (kind == "gpt2") {
      json vocab = json::object();
      for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
      write_text_atomically(out / "vocab.json", vocab.dump());
      std::string merges = "#version: 0.2\n";
      for (const auto& line : get("tokenizer.ggml.merges"))
        merges += line.get<std::string>() + "\n";
      write_text_atomically(out / "merges.txt", merges);
      tokenizer = text::load_gpt2_tokenizer(out / "vocab.json", out / "merges.txt");
    } else if (kind == "llama") {
      auto scores = get("tokenizer.ggml.scores").get<std::vector<float>>();
      if (scores.size() != tokens.size())
        fail(path, "tokenizer.ggml.scores and tokens differ in length");
      tokenizer = std::make_unique<VocabList>(tokens, scores, c.bos_token_id, c.eos_token_id);
    } else {
      fail(path, "tokenizer.ggml.model \"" + kind + "\" is not supported (llama, gpt2)");
    }
  }
  model::Transformer result(c);
  result->load_state(state, path.string());
  save_model_dir(out, *result, tokenizer.get(), nullptr);
}

}  // namespace flextron::io
