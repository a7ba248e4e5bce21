// Model hyper-parameters, read from and written to config.json with HuggingFace field names so
// that a HuggingFace Llama directory is a valid model directory as it is.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace flextron::model {

// The transformer family: both share one block structure and differ in the parts below
// (normalisation, MLP, position encoding, biases).
enum class Family { Llama, Gpt2 };

struct ModelConfig {
  Family family = Family::Llama;
  int64_t hidden_size = 64;
  int64_t intermediate_size = 172;
  int64_t num_hidden_layers = 5;
  int64_t num_attention_heads = 8;
  int64_t num_key_value_heads = 4;
  int64_t vocab_size = 512;
  int64_t max_position_embeddings = 512;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = true;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  // HF's optional "head_dim": set when heads * head_dim != hidden_size (e.g. a model extracted
  // with fewer heads); 0 means hidden_size / num_attention_heads.
  int64_t head_dim_override = 0;

  // Per-layer widths of a heterogeneous model (an extracted sub-network): MLP neurons and KV
  // heads of each layer. Empty means every layer has intermediate_size / num_key_value_heads,
  // which then are the per-layer maxima. Stored in config.json as "layer_intermediate_sizes" and
  // "layer_num_key_value_heads" (GGUF keeps the same as feed_forward_length / head_count_kv
  // arrays); a uniform model keeps a plain HF config.
  std::vector<int64_t> layer_intermediate_sizes;
  std::vector<int64_t> layer_key_value_heads;

  int64_t head_dim() const {
    return head_dim_override > 0 ? head_dim_override : hidden_size / num_attention_heads;
  }
  // Query heads per KV head (grouped-query attention).
  int64_t group_size() const { return num_attention_heads / num_key_value_heads; }
  // MLP neurons and KV heads of layer l.
  int64_t layer_mlp(int64_t l) const {
    return layer_intermediate_sizes.empty() ? intermediate_size : layer_intermediate_sizes[l];
  }
  int64_t layer_kv_heads(int64_t l) const {
    return layer_key_value_heads.empty() ? num_key_value_heads : layer_key_value_heads[l];
  }
  bool heterogeneous() const {
    return !layer_intermediate_sizes.empty() || !layer_key_value_heads.empty();
  }

  // Throws flextron::Error naming `where` if sizes are non-positive or inconsistent.
  void validate(const std::string& where) const;
};

ModelConfig config_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json config_to_json(const ModelConfig& config);

ModelConfig load_config(const std::filesystem::path& path);
void save_config(const ModelConfig& config, const std::filesystem::path& path);

}  // namespace flextron::model
