#include "model/config.h"

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

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  auto positive = [&](const char* name, int64_t value) {
    if (value <= 0)
      fail(where, std::string(name) + " must be positive, got " + std::to_string(value));
  };
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("vocab_size", vocab_size);
  positive("max_position_embeddings", max_position_embeddings);
  if (head_dim_override < 0) fail(where, "head_dim must be positive");
  if (head_dim_override == 0 && hidden_size % num_attention_heads != 0)
    fail(where, "hidden_size " + std::to_string(hidden_size) +
                    " is not divisible by num_attention_heads " +
                    std::to_string(num_attention_heads));
  if (num_attention_heads % num_key_value_heads != 0)
    fail(where, "num_attention_heads " + std::to_string(num_attention_heads) +
                    " is not divisible by num_key_value_heads " +
                    std::to_string(num_key_value_heads));
  if (head_dim() % 2 != 0) fail(where, "head dimension must be even for rotary embeddings");
  if (rms_norm_eps <= 0) fail(where, "rms_norm_eps must be positive");
  if (rope_theta <= 0) fail(where, "rope_theta must be positive");
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

ModelConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "config must be a JSON object");
  ModelConfig c;
  const std::string model_type = j.value("model_type", std::string("llama"));
  if (model_type == "llama" || model_type == "mistral") {
    c.family = Family::Llama;
  } else {
    fail(where, "unsupported model_type \"" + model_type + "\" (supported: llama)");
  }
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
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean())
      fail(where, "field \"tie_word_embeddings\" must be true or false");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  } else {
    c.tie_word_embeddings = false;  // HF LlamaConfig's default
  }
  c.head_dim_override = int_field(j, "head_dim", 0, false, where);
  if (c.head_dim_override == c.hidden_size / c.num_attention_heads) c.head_dim_override = 0;
  c.bos_token_id = int_field(j, "bos_token_id", 1, false, where);
  c.eos_token_id = int_field(j, "eos_token_id", 2, false, where);
  auto int_list = [&](const char* key) {
    std::vector<int64_t> values;
    if (!j.contains(key) || j[key].is_null()) return values;
    if (!j[key].is_array()) fail(where, std::string("field \"") + key + "\" must be a list");
    for (const auto& v : j[key]) {
      if (!v.is_number_integer())
        fail(where, std::string("field \"") + key + "\" must hold integers, got " + v.dump());
      values.push_back(v.get<int64_t>());
    }
    return values;
  };
  c.layer_intermediate_sizes = int_list("layer_intermediate_sizes");
  c.layer_key_value_heads = int_list("layer_num_key_value_heads");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(where, "rope_scaling is not supported yet");
  c.validate(where);
  return c;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
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
  if (!c.layer_intermediate_sizes.empty())
    j["layer_intermediate_sizes"] = c.layer_intermediate_sizes;
  if (!c.layer_key_value_heads.empty()) j["layer_num_key_value_heads"] = c.layer_key_value_heads;
  return j;
}

ModelConfig load_config(const std::filesystem::path& path) {
  return config_from_json(io::read_json_file(path), path.string());
}

void save_config(const ModelConfig& config, const std::filesystem::path& path) {
  io::write_text_atomically(path, config_to_json(config).dump(2) + "\n");
}

}  // namespace flextron::model
