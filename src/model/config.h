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

// HF "rope_scaling" of long-context Llama checkpoints: how the rotary frequencies
// inv_freq_i = theta^(-2i/head_dim) are rescaled (model::rope_tables applies it).
//  - Linear ("linear"): every frequency divided by `factor` (positions interpolated).
//  - Llama3 ("llama3", Llama 3.1+): with wavelength w_i = 2 pi / inv_freq_i, L = the original
//    context, frequencies with w_i < L / high_freq_factor are kept, those with
//    w_i > L / low_freq_factor are divided by `factor`, and the band between is blended:
//      s = (L / w_i - low_freq_factor) / (high_freq_factor - low_freq_factor),
//      inv_freq_i' = (1 - s) * inv_freq_i / factor + s * inv_freq_i.
struct RopeScaling {
  enum class Kind { None, Linear, Llama3 };
  Kind kind = Kind::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

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
  RopeScaling rope_scaling;  // Llama only
  // Projection biases of the Llama family (GPT-2 always has all of them): on the q/k/v rows
  // (Qwen2, LlamaConfig's attention_bias) and on o (attention_bias only). They slice with the
  // rows they belong to, so elastic prefixes keep them.
  bool qkv_bias = false;
  bool o_bias = false;
  // The HF model_type a Llama-family config was read as ("llama", "mistral", "qwen2"), written
  // back so that the directory loads in transformers with the same classes.
  std::string hf_model_type = "llama";
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
  // Whether q/k/v (and o) carry biases, whatever the family.
  bool has_qkv_bias() const { return gpt() || qkv_bias; }
  bool has_o_bias() const { return gpt() || o_bias; }
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

// Reads a HuggingFace config: model_type "llama", "mistral" or "qwen2" with Llama's field names
// (rope_scaling linear / llama3, head_dim, attention_bias; Qwen2's q/k/v biases; a
// sliding_window smaller than the context is refused), or "gpt2" with GPT-2's (n_embd, n_layer,
// n_head, n_inner, n_positions, layer_norm_epsilon). Fields that would change the computation
// and are not supported are refused by name.
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
