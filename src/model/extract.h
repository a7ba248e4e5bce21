// Extraction (FLEXTRON.md section 6): one architecture of the elastic model written out as a
// standalone dense model with per-layer widths, computing what the elastic model computes at
// that architecture.
#pragma once

#include "model/transformer.h"

namespace flextron::model {

// The config of the dense model for `arch`: a plain HF Llama config when every layer has the
// same widths, else per-layer lists (ModelConfig::layer_intermediate_sizes and friends).
ModelConfig extracted_config(const ModelConfig& config, const Architecture& arch);

// A new model on the same device and dtype holding copies of the prefix slices of `model` at
// `arch` (checked with check_architecture).
Transformer extract_subnetwork(TransformerImpl& model, const Architecture& arch);

// Parameters of the sub-network at `arch` (empty: full), i.e. of its extracted model.
int64_t subnetwork_parameter_count(const ModelConfig& config, const Architecture& arch);
// One layer's MLP parameters at `width` neurons, and its attention parameters at `kv_groups`
// (with biases for the GPT family): what a decode step reads of that layer.
int64_t layer_mlp_parameters(const ModelConfig& config, int64_t width);
int64_t layer_attention_parameters(const ModelConfig& config, int64_t kv_groups);

}  // namespace flextron::model
