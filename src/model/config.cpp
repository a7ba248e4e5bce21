#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"

namespace flextron::model {

namespace {

// Reads an integer field, or keeps the default when absent and optional.
int64_t int_field(const nlohmann::json& j, const char* key, int64_t fallback, bool required,
                  const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(where, std::string("missing field \"") + key + "\"");
    return fallback;
  }
  if (!j[key].is_number_integer())
    fail(where, std::string("field \"") + key + "\" must be an integer, got " + j[key].dump());
  return j[key].get<int64_t>();
}

double number_field(const nlohmann::json& j, const char* key, double fallback,
                    const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number())
    fail(where, std::string("field \"") + key + "\" must be a number, got " + j[key].dump());
  return j[key].get<double>();
}

// Reads a string field, or the default when absent or null.
std::string string_field(const nlohmann::json& j, const char* key, const std::string& fallback,
                         const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string())
    fail(where, std::string("field \"") + key + "\" must be a string, got " + j[key].dump());
  return j[key].get<std::string>();
}

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  // Every size positive and bounded, so that no product of sizes below overflows int64 and a
  // corrupt config fails here, before anything is allocated from it. The bounds are far above
  // any published model (Llama 3.1 405B: 126 layers, hidden 16384, MLP 53248, vocab 128256).
  auto bounded = [&](const char* name, int64_t value, int64_t max) {
    if (value <= 0)
      fail(where, std::string(name) + " must be positive, got " + std::to_string(value));
    if (value > max)
      fail(where, std::string(name) + " = " + std::to_string(value) +
                      " is implausibly large (the limit is " + std::to_string(max) + ")");
  };
  constexpr int64_t kMaxWidth = int64_t{1} << 20, kMaxCount = int64_t{1} << 14;
  constexpr int64_t kMaxTokens = int64_t{1} << 24;
  bounded("hidden_size", hidden_size, kMaxWidth);
  bounded("intermediate_size", intermediate_size, kMaxWidth);
  bounded("num_hidden_layers", num_hidden_layers, kMaxCount);
  bounded("num_attention_heads", num_attention_heads, kMaxCount);
  bounded("num_key_value_heads", num_key_value_heads, kMaxCount);
  bounded("vocab_size", vocab_size, kMaxTokens);
  bounded("max_position_embeddings", max_position_embeddings, kMaxTokens);
  if (head_dim_override < 0) fail(where, "head_dim must be positive");
  if (head_dim_override > kMaxCount)
    fail(where, "head_dim = " + std::to_string(head_dim_override) + " is implausibly large");
  if (head_dim_override == 0 && hidden_size % num_attention_heads != 0)
    fail(where, "hidden_size " + std::to_string(hidden_size) +
                    " is not divisible by num_attention_heads " +
                    std::to_string(num_attention_heads));
  if (num_attention_heads % num_key_value_heads != 0)
    fail(where, "num_attention_heads " + std::to_string(num_attention_heads) +
                    " is not divisible by num_key_value_heads " +
                    std::to_string(num_key_value_heads));
  if (family == Family::Llama && head_dim() % 2 != 0)
    fail(where, "head dimension must be even for rotary embeddings");
  if (family == Family::Gpt2 && num_key_value_heads != num_attention_heads)
    fail(where, "GPT-2 has one KV head per query head, got " + std::to_string(num_attention_heads) +
                    " heads and " + std::to_string(num_key_value_heads) + " KV heads");
  if (rms_norm_eps <= 0) fail(where, "rms_norm_eps must be positive");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    fail(where, "rope_theta must be a positive number");
  if (!(rms_norm_eps < 1) || !std::isfinite(rms_norm_eps))
    fail(where, "rms_norm_eps must be a positive number below 1");
  if (rope_scaling.kind != RopeScaling::Kind::None) {
    if (family != Family::Llama) fail(where, "rope_scaling applies to the Llama family only");
    if (!(rope_scaling.factor >= 1) || !std::isfinite(rope_scaling.factor))
      fail(where, "rope_scaling factor must be a finite number >= 1");
  }
  if (rope_scaling.kind == RopeScaling::Kind::Llama3) {
    const auto& r = rope_scaling;
    if (!(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
        !std::isfinite(r.high_freq_factor))
      fail(where, "rope_scaling needs 0 < low_freq_factor < high_freq_factor");
    if (r.original_max_position_embeddings <= 0)
      fail(where, "rope_scaling original_max_position_embeddings must be positive");
  }
  auto check_layers = [&](const char* name, const std::vector<int64_t>& values, int64_t max) {
    if (values.empty()) return;
    if (static_cast<int64_t>(values.size()) != num_hidden_layers)
      fail(where, std::string(name) + " has " + std::to_string(values.size()) + " entries for " +
                      std::to_string(num_hidden_layers) + " layers");
    for (size_t l = 0; l < values.size(); ++l)
      if (values[l] < 1 || values[l] > max)
        fail(where, std::string(name) + "[" + std::to_string(l) + "] = " +
                        std::to_string(values[l]) + " outside [1, " + std::to_string(max) + "]");
  };
  check_layers("layer_intermediate_sizes", layer_intermediate_sizes, intermediate_size);
  check_layers("layer_num_key_value_heads", layer_key_value_heads, num_key_value_heads);
}

namespace {

std::vector<int64_t> int_list(const nlohmann::json& j, const char* key, const std::string& where) {
  std::vector<int64_t> values;
  if (!j.contains(key) || j[key].is_null()) return values;
  if (!j[key].is_array()) fail(where, std::string("field \"") + key + "\" must be a list");
  for (const auto& v : j[key]) {
    if (!v.is_number_integer())
      fail(where, std::string("field \"") + key + "\" must hold integers, got " + v.dump());
    values.push_back(v.get<int64_t>());
  }
  return values;
}

bool bool_field(const nlohmann::json& j, const char* key, bool fallback, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) fail(where, std::string("field \"") + key + "\" must be true or false");
  return j[key].get<bool>();
}

// HF "rope_scaling": null, {"rope_type" (or the older "type"): "default" | "linear" |
// "llama3", ...}. Other kinds (yarn, dynamic, longrope) change attention in ways these blocks do
// not compute and are refused by name.
RopeScaling read_rope_scaling(const nlohmann::json& j, const std::string& where) {
  RopeScaling r;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return r;
  const auto& s = j["rope_scaling"];
  if (!s.is_object()) fail(where, "field \"rope_scaling\" must be an object or null");
  const char* kind_key = s.contains("rope_type") ? "rope_type" : "type";
  if (!s.contains(kind_key) || !s[kind_key].is_string())
    fail(where, "rope_scaling has no \"rope_type\" string");
  const auto kind = s[kind_key].get<std::string>();
  const std::string in = where + ": rope_scaling";
  if (kind == "default") return r;
  if (kind == "linear") {
    r.kind = RopeScaling::Kind::Linear;
    r.factor = number_field(s, "factor", 0.0, in);
    return r;
  }
  if (kind == "llama3") {
    r.kind = RopeScaling::Kind::Llama3;
    for (const char* key :
         {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!s.contains(key)) fail(in, std::string("llama3 scaling needs \"") + key + "\"");
    r.factor = number_field(s, "factor", 0.0, in);
    r.low_freq_factor = number_field(s, "low_freq_factor", 0.0, in);
    r.high_freq_factor = number_field(s, "high_freq_factor", 0.0, in);
    r.original_max_position_embeddings =
        int_field(s, "original_max_position_embeddings", 0, true, in);
    return r;
  }
  fail(where, "rope_scaling type \"" + kind + "\" is not supported (supported: linear, llama3)");
}

// Llama's field names (HF LlamaConfig), and the variants that share them: Mistral (a sliding
// window) and Qwen2 (q/k/v biases).
void read_llama_fields(const nlohmann::json& j, ModelConfig& c, const std::string& model_type,
                       const std::string& where) {
  c.family = Family::Llama;
  c.hf_model_type = model_type;
  c.hidden_size = int_field(j, "hidden_size", 0, true, where);
  c.intermediate_size = int_field(j, "intermediate_size", 0, true, where);
  c.num_hidden_layers = int_field(j, "num_hidden_layers", 0, true, where);
  c.num_attention_heads = int_field(j, "num_attention_heads", 0, true, where);
  // HF's default: no grouping when the field is absent.
  c.num_key_value_heads = int_field(j, "num_key_value_heads", c.num_attention_heads, false, where);
  c.vocab_size = int_field(j, "vocab_size", 0, true, where);
  c.max_position_embeddings = int_field(j, "max_position_embeddings", 2048, false, where);
  c.rms_norm_eps = number_field(j, "rms_norm_eps", 1e-6, where);
  c.rope_theta = number_field(j, "rope_theta", 10000.0, where);
  // LlamaConfig's and Qwen2Config's default; a checkpoint that stores only one of the two
  // matrices without saying is resolved by the loader (io/model_dir.h).
  c.tie_word_embeddings = bool_field(j, "tie_word_embeddings", false, where);
  c.bos_token_id = int_field(j, "bos_token_id", 1, false, where);
  // Llama 3 lists several end-of-turn ids; the first is the one this config keeps (the
  // tokenizer's generation_config.json gives generation all of them).
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const auto& ids = j["eos_token_id"];
    if (ids.empty() || !ids[0].is_number_integer())
      fail(where, "field \"eos_token_id\" must be an integer or a list of integers");
    c.eos_token_id = ids[0].get<int64_t>();
  } else {
    c.eos_token_id = int_field(j, "eos_token_id", 2, false, where);
  }
  c.rope_scaling = read_rope_scaling(j, where);
  const std::string act = string_field(j, "hidden_act", "silu", where);
  if (act != "silu")
    fail(where, "hidden_act \"" + act + "\" is not supported (the Llama family's MLP is SwiGLU)");
  if (model_type == "qwen2") {
    c.qkv_bias = true;  // Qwen2Attention: bias on q/k/v, none on o
  } else {
    c.qkv_bias = c.o_bias = bool_field(j, "attention_bias", false, where);
  }
  if (bool_field(j, "mlp_bias", false, where)) fail(where, "mlp_bias = true is not supported");
  // Sliding-window attention equals full attention while the context fits in the window.
  const bool window_used =
      model_type != "qwen2" || bool_field(j, "use_sliding_window", false, where);
  if (window_used && j.contains("sliding_window") && !j["sliding_window"].is_null()) {
    const int64_t window = int_field(j, "sliding_window", 0, false, where);
    if (window < c.max_position_embeddings)
      fail(where, "sliding_window " + std::to_string(window) +
                      " is smaller than max_position_embeddings " +
                      std::to_string(c.max_position_embeddings) +
                      ": sliding-window attention is not supported");
  }
}

// GPT-2's field names (HF GPT2Config), with its defaults.
void read_gpt2_fields(const nlohmann::json& j, ModelConfig& c, const std::string& where) {
  c.family = Family::Gpt2;
  c.hidden_size = int_field(j, "n_embd", 768, false, where);
  c.num_hidden_layers = int_field(j, "n_layer", 12, false, where);
  c.num_attention_heads = int_field(j, "n_head", 12, false, where);
  c.num_key_value_heads = c.num_attention_heads;
  // n_inner: null means 4 * n_embd.
  c.intermediate_size = int_field(j, "n_inner", 4 * c.hidden_size, false, where);
  c.vocab_size = int_field(j, "vocab_size", 50257, false, where);
  c.max_position_embeddings = int_field(j, "n_positions", 1024, false, where);
  c.rms_norm_eps = number_field(j, "layer_norm_epsilon", 1e-5, where);
  c.tie_word_embeddings = bool_field(j, "tie_word_embeddings", true, where);
  c.bos_token_id = int_field(j, "bos_token_id", 50256, false, where);
  c.eos_token_id = int_field(j, "eos_token_id", 50256, false, where);
  const std::string act = string_field(j, "activation_function", "gelu_new", where);
  if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") {
    c.gelu_tanh = true;
  } else if (act == "gelu") {
    c.gelu_tanh = false;
  } else {
    fail(where, "activation_function \"" + act +
                    "\" is not supported (supported: gelu_new, gelu_pytorch_tanh, gelu)");
  }
  // Variants of the attention that these blocks do not compute.
  if (!bool_field(j, "scale_attn_weights", true, where))
    fail(where, "scale_attn_weights = false is not supported");
  if (bool_field(j, "scale_attn_by_inverse_layer_idx", false, where))
    fail(where, "scale_attn_by_inverse_layer_idx = true is not supported");
  if (j.contains("n_kv_heads") || j.contains("num_key_value_heads"))
    fail(where, "GPT-2 configs have no grouped-query attention field");
}

}  // namespace

ModelConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "config must be a JSON object");
  ModelConfig c;
  const std::string model_type = string_field(j, "model_type", "llama", where);
  if (model_type == "llama" || model_type == "mistral" || model_type == "qwen2") {
    read_llama_fields(j, c, model_type, where);
  } else if (model_type == "gpt2") {
    read_gpt2_fields(j, c, where);
  } else {
    fail(where,
         "unsupported model_type \"" + model_type + "\" (supported: llama, mistral, qwen2, gpt2)");
  }
  // Fields of ours (not HF's) shared by both families: a head size that differs from
  // hidden / heads (an extracted sub-network) and per-layer widths.
  c.head_dim_override = int_field(j, "head_dim", 0, false, where);
  if (c.head_dim_override == c.hidden_size / std::max<int64_t>(1, c.num_attention_heads))
    c.head_dim_override = 0;
  c.layer_intermediate_sizes = int_list(j, "layer_intermediate_sizes", where);
  c.layer_key_value_heads = int_list(j, "layer_num_key_value_heads", where);
  c.validate(where);
  return c;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j;
  if (c.gpt()) {
    j["architectures"] = {"GPT2LMHeadModel"};
    j["model_type"] = "gpt2";
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_hidden_layers;
    j["n_head"] = c.num_attention_heads;
    j["n_inner"] = c.intermediate_size;
    j["n_positions"] = c.max_position_embeddings;
    j["n_ctx"] = c.max_position_embeddings;
    j["vocab_size"] = c.vocab_size;
    j["layer_norm_epsilon"] = c.rms_norm_eps;
    j["activation_function"] = c.gelu_tanh ? "gelu_new" : "gelu";
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["bos_token_id"] = c.bos_token_id;
    j["eos_token_id"] = c.eos_token_id;
    if (c.head_dim_override > 0) j["head_dim"] = c.head_dim_override;
  } else {
    // A Qwen2-shaped model (q/k/v biases, none on o) is written as Qwen2 whatever it was read
    // as, so that transformers builds the same blocks.
    const std::string type = c.qkv_bias && !c.o_bias      ? "qwen2"
                             : c.hf_model_type == "qwen2" ? "llama"
                                                          : c.hf_model_type;
    j["architectures"] = {type == "qwen2"     ? "Qwen2ForCausalLM"
                          : type == "mistral" ? "MistralForCausalLM"
                                              : "LlamaForCausalLM"};
    j["model_type"] = type;
    if (type != "qwen2") j["attention_bias"] = c.o_bias;
    if (type == "mistral") j["sliding_window"] = nullptr;
    if (c.rope_scaling.kind == RopeScaling::Kind::Linear)
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.kind == RopeScaling::Kind::Llama3)
      j["rope_scaling"] = {
          {"rope_type", "llama3"},
          {"factor", c.rope_scaling.factor},
          {"low_freq_factor", c.rope_scaling.low_freq_factor},
          {"high_freq_factor", c.rope_scaling.high_freq_factor},
          {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
    j["hidden_size"] = c.hidden_size;
    j["intermediate_size"] = c.intermediate_size;
    j["num_hidden_layers"] = c.num_hidden_layers;
    j["num_attention_heads"] = c.num_attention_heads;
    j["num_key_value_heads"] = c.num_key_value_heads;
    j["vocab_size"] = c.vocab_size;
    j["max_position_embeddings"] = c.max_position_embeddings;
    j["rms_norm_eps"] = c.rms_norm_eps;
    j["rope_theta"] = c.rope_theta;
    j["tie_word_embeddings"] = c.tie_word_embeddings;
    j["head_dim"] = c.head_dim();
    j["bos_token_id"] = c.bos_token_id;
    j["eos_token_id"] = c.eos_token_id;
    j["hidden_act"] = "silu";
  }
  if (!c.layer_intermediate_sizes.empty())
    j["layer_intermediate_sizes"] = c.layer_intermediate_sizes;
  if (!c.layer_key_value_heads.empty()) j["layer_num_key_value_heads"] = c.layer_key_value_heads;
  return j;
}

ModelConfig gpt2_variant(const ModelConfig& llama) {
  ModelConfig c = llama;
  c.family = Family::Gpt2;
  c.num_key_value_heads = c.num_attention_heads;
  c.intermediate_size = 4 * c.hidden_size;
  c.layer_intermediate_sizes.clear();
  c.layer_key_value_heads.clear();
  c.validate("GPT-2 variant");
  return c;
}

std::string family_name(Family family) {
  return family == Family::Gpt2 ? "gpt2" : "llama";
}

Family parse_family(const std::string& name, const std::string& where) {
  if (name == "llama") return Family::Llama;
  if (name == "gpt2" || name == "gpt") return Family::Gpt2;
  fail(where, "unknown model family \"" + name + "\" (known: llama, gpt2)");
}

ModelConfig load_config(const std::filesystem::path& path) {
  return config_from_json(io::read_json_file(path), path.string());
}

void save_config(const ModelConfig& config, const std::filesystem::path& path) {
  io::write_text_atomically(path, config_to_json(config).dump(2) + "\n");
}

}  // namespace flextron::model
