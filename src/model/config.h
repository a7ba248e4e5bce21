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
  // The normalisation's epsilon: RMSNorm's (Llama) or LayerNorm's (GPT-2 "layer_norm_epsilon").
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;  // Llama only: GPT-2 learns absolute positions instead
  // GPT-2's MLP activation: GELU with the tanh approximation (HF "gelu_new", the GPT-2
  // default) or the exact erf form ("gelu").
  bool gelu_tanh = true;
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
  bool gpt() const { return family == Family::Gpt2; }
  // Query heads per KV head (grouped-query attention; 1 for GPT-2, whose unit is one head).
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

// Reads a HuggingFace config: model_type "llama" (or "mistral") with Llama's field names, or
// "gpt2" with GPT-2's (n_embd, n_layer, n_head, n_inner, n_positions, layer_norm_epsilon).
ModelConfig config_from_json(const nlohmann::json& j, const std::string& where);
// Writes the family's own HuggingFace field names (so the directory loads in transformers).
nlohmann::json config_to_json(const ModelConfig& config);

// The GPT-2 variant of a Llama-shaped config, for pretraining both families at one size: every
// head its own KV head (GPT-2 has no grouped-query attention) and a 4x MLP, which has the
// parameters of the SwiGLU MLP it replaces (2 * 4d * d vs 3 * (8d/3) * d).
ModelConfig gpt2_variant(const ModelConfig& llama);

// "llama" or "gpt2", and back; throws flextron::Error naming `where` for anything else.
std::string family_name(Family family);
Family parse_family(const std::string& name, const std::string& where);

ModelConfig load_config(const std::filesystem::path& path);
void save_config(const ModelConfig& config, const std::filesystem::path& path);

}  // namespace flextron::model
