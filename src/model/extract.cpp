#include "model/extract.h"

#include <algorithm>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::model {

ModelConfig extracted_config(const ModelConfig& config, const Architecture& arch) {
  check_architecture(config, arch, "extract");
  ModelConfig c = config;
  const bool uniform = is_uniform(arch);
  int64_t max_mlp = 0, max_kv = 0;
  for (const auto& w : arch) {
    max_mlp = std::max(max_mlp, w.mlp);
    max_kv = std::max(max_kv, w.kv_groups);
  }
  c.head_dim_override = config.head_dim();  // heads may shrink; the head size does not
  c.intermediate_size = max_mlp;
  c.num_key_value_heads = max_kv;
  c.num_attention_heads = max_kv * config.group_size();
  c.layer_intermediate_sizes.clear();
  c.layer_key_value_heads.clear();
  if (!uniform) {
    for (const auto& w : arch) {
      c.layer_intermediate_sizes.push_back(w.mlp);
      c.layer_key_value_heads.push_back(w.kv_groups);
    }
  }
  c.validate("extracted config");
  return c;
}

Transformer extract_subnetwork(TransformerImpl& model, const Architecture& arch) {
  Transformer dense(extracted_config(model.config(), arch));
  dense->to(model.device(), model.dtype());
  // Every elastic slice is a prefix along each dimension, so each dense tensor is the leading
  // block of the elastic tensor of the same name.
  const auto source = model.state();
  io::TensorMap sliced;
  for (const auto& [name, target] : dense->state()) {
    auto t = source.at(name);
    for (int64_t d = 0; d < t.dim(); ++d) t = t.narrow(d, 0, target.size(d));
    sliced[name] = t;
  }
  dense->load_state(sliced, "extract");
  dense->train(model.is_training());
  return dense;
}

int64_t subnetwork_parameter_count(const ModelConfig& config, const Architecture& arch) {
  const Architecture widths = arch.empty() ? full_architecture(config) : arch;
  const bool gpt = config.family == Family::Gpt2;
  const int64_t d = config.hidden_size;
  const int64_t norm = gpt ? 2 * d : d;  // LayerNorm has a bias
  int64_t n = config.vocab_size * d * (config.tie_word_embeddings ? 1 : 2) + norm;
  if (gpt) n += config.max_position_embeddings * d;  // learned positions
  for (const auto& w : widths)
    n += layer_attention_parameters(config, w.kv_groups) + layer_mlp_parameters(config, w.mlp) +
         2 * norm;
  return n;
}

int64_t layer_mlp_parameters(const ModelConfig& config, int64_t width) {
  const bool gpt = config.family == Family::Gpt2;
  const int64_t d = config.hidden_size;
  return (gpt ? 2 : 3) * d * width + (gpt ? width + d : 0);  // gate?, up, down (+ biases)
}

int64_t layer_attention_parameters(const ModelConfig& config, int64_t kv_groups) {
  const int64_t d = config.hidden_size;
  const int64_t q = kv_groups * config.group_size() * config.head_dim(),
                kv = kv_groups * config.head_dim();
  // q, k, v, o (+ biases)
  return d * q + 2 * d * kv + q * d + (config.has_qkv_bias() ? q + 2 * kv : 0) +
         (config.has_o_bias() ? d : 0);
}

}  // namespace flextron::model
