// A model directory: config.json + model.safetensors (HF Llama or GPT-2 names; sharded
// model.safetensors.index.json is read too) + the tokenizer file. A HuggingFace Llama directory
// is one as it is.
#pragma once

#include <filesystem>
#include <memory>

#include <torch/types.h>

#include "model/elastic_space.h"
#include "model/transformer.h"
#include "text/tokenizer.h"

namespace flextron::io {

struct LoadedModel {
  model::Transformer model{nullptr};
  std::unique_ptr<text::Tokenizer> tokenizer;  // null when the directory has none
  model::ElasticSpace space;                   // flextron.json, or the default space when absent
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat;
  bool with_tokenizer = true;
};

// Throws flextron::Error naming the file and the problem (missing config or weights, shapes
// that disagree with config.json, missing tensors, unreadable tokenizer).
LoadedModel load_model_dir(const std::filesystem::path& dir, const LoadOptions& options = {});

// All tensors of a directory's weights (single file or shards), as stored.
TensorMap load_model_tensors(const std::filesystem::path& dir);

// The same in our parameter names (TransformerImpl::state()): a GPT-2 directory's HF layout is
// converted (io/hf_gpt2.h), a Llama directory's is ours already.
TensorMap load_model_state(const std::filesystem::path& dir, const model::ModelConfig& config);

// Writes config.json, model.safetensors, the tokenizer's file and (when given) flextron.json
// into `dir` (created if needed).
void save_model_dir(const std::filesystem::path& dir, model::TransformerImpl& model,
                    const text::Tokenizer* tokenizer, const model::ElasticSpace* space = nullptr);

}  // namespace flextron::io
