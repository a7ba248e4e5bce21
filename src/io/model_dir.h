// A model directory: config.json + model.safetensors (HF Llama or GPT-2 names; sharded
// model.safetensors.index.json is read too) + the tokenizer file. A HuggingFace Llama directory
// is one as it is.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "core/quant_blocks.h"
#include "io/safetensors.h"
#include "model/elastic_space.h"
#include "model/transformer.h"
#include "text/tokenizer.h"

namespace flextron::io {

struct LoadedModel {
  model::Transformer model{nullptr};
  std::unique_ptr<text::Tokenizer> tokenizer;  // null when the directory has none
  model::ElasticSpace space;                   // flextron.json, or the default space when absent
  // What loading resolved or skipped in a checkpoint as published (tied embeddings stored under
  // lm_head.weight, an alias map, tensors the model does not use), one sentence each, for the
  // CLI to show as notes.
  std::vector<std::string> notes;
  // The format its matrices are stored in: "f32" (any float dtype), or "q8_0" / "q4_0" for a
  // directory `flextron quantize` wrote (they load dequantized; the fast runtime quantizes them
  // again, bit for bit, when it runs that format).
  std::string stored_weights = "f32";
};

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat;
  bool with_tokenizer = true;
};

// Throws flextron::Error naming the file and the problem (missing config or weights, shapes
// that disagree with config.json, missing tensors, unreadable tokenizer).
LoadedModel load_model_dir(const std::filesystem::path& dir, const LoadOptions& options = {});

// All tensors of a directory's weights (single file or shards), as stored, and the files'
// __metadata__ merged. A sharded index whose weight_map names a tensor its shard lacks is an
// error naming both.
TensorMap load_model_tensors(const std::filesystem::path& dir, Metadata* metadata = nullptr);

// The same in our parameter names (TransformerImpl::state()): a GPT-2 directory's HF layout is
// converted (io/hf_gpt2.h); a Llama-family directory is resolved as transformers writes it:
//  - "__metadata__" entries {missing name: stored name} (safetensors' alias map of shared
//    tensors) give the missing tensor the stored one's values;
//  - tied embeddings stored under either name; with tie_word_embeddings absent from config.json
//    (LlamaConfig's default is false), a checkpoint that stores only one of the two matrices is
//    tied, and `config` says so; with it true, a stored lm_head.weight must equal the embedding;
// Each decision is a sentence in `notes`. load_model_dir then drops, with a note, tensors the
// model does not use (rotary inv_freq buffers, anything else).
TensorMap load_model_state(const std::filesystem::path& dir, model::ModelConfig& config,
                           bool tie_given, std::vector<std::string>* notes,
                           Metadata* metadata = nullptr);

// Writes config.json, model.safetensors, the tokenizer's file and (when given) flextron.json
// into `dir` (created if needed).
// `matrices`: F32 (as they are), or Q8_0 / Q4_0: every matrix the fast runtime quantizes
// (q/k/v/o/gate/up/down, the embedding, an untied LM head) stored as blocks (llama.cpp's
// reference rounding), the __metadata__ naming the format; norms and biases stay F32.
void save_model_dir(const std::filesystem::path& dir, model::TransformerImpl& model,
                    const text::Tokenizer* tokenizer, const model::ElasticSpace* space = nullptr,
                    quant::GgmlType matrices = quant::GgmlType::F32);

// The metadata key that names a quantized directory's format, and its values.
constexpr const char* kStoredWeightsKey = "flextron.weights";

}  // namespace flextron::io
