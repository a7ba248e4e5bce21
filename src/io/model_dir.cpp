#include "io/model_dir.h"

#include <fstream>
#include <set>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/hf_gpt2.h"

namespace flextron::io {

namespace fs = std::filesystem;

TensorMap load_model_tensors(const fs::path& dir) {
  const auto single = dir / "model.safetensors";
  if (fs::exists(single)) return load_safetensors(single);
  const auto index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const auto index = read_json_file(index_path);
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail(index_path.string(), "no \"weight_map\" object");
    std::set<std::string> shards;
    for (const auto& [name, file] : index["weight_map"].items())
      shards.insert(file.get<std::string>());
    TensorMap all;
    for (const auto& shard : shards) {
      auto part = load_safetensors(dir / shard);
      all.insert(part.begin(), part.end());
    }
    return all;
  }
  if (fs::exists(dir / "pytorch_model.bin"))
    fail((dir / "pytorch_model.bin").string(),
         "PyTorch pickle checkpoints are not supported; save the model with safetensors");
  fail(dir.string(), "no model.safetensors (or model.safetensors.index.json) in this directory");
}

namespace {

// What errors about a directory's weights name: its single file, or the directory (shards).
std::string weights_name(const fs::path& dir) {
  const auto single = dir / "model.safetensors";
  return fs::exists(single) ? single.string() : dir.string();
}

}  // namespace

TensorMap load_model_state(const fs::path& dir, const model::ModelConfig& config) {
  auto stored = load_model_tensors(dir);
  if (!config.gpt()) return stored;
  return gpt2_from_hf(stored, config, weights_name(dir));
}

LoadedModel load_model_dir(const fs::path& dir, const LoadOptions& options) {
  if (!fs::is_directory(dir)) fail(dir.string(), "not a model directory");
  const auto config = model::load_config(dir / "config.json");
  LoadedModel loaded;
  loaded.model = model::Transformer(config);
  // In the requested dtype before the copy: a float64 file loaded as float64 keeps every bit.
  loaded.model->to(options.device, options.dtype);
  loaded.model->load_state(load_model_state(dir, config), weights_name(dir));
  loaded.model->eval();
  loaded.space = model::load_elastic_space(dir, config);
  // A directory without tokenizer files still loads (the weights alone are useful); commands
  // that need text check for it.
  if (options.with_tokenizer && text::has_tokenizer_files(dir))
    loaded.tokenizer = text::load_tokenizer(dir, config.vocab_size);
  return loaded;
}

void save_model_dir(const fs::path& dir, model::TransformerImpl& model,
                    const text::Tokenizer* tokenizer, const model::ElasticSpace* space) {
  fs::create_directories(dir);
  model::save_config(model.config(), dir / "config.json");
  // Each family in its own HuggingFace layout, so the directory loads in transformers too.
  const auto& config = model.config();
  save_safetensors(dir / "model.safetensors",
                   config.gpt() ? gpt2_to_hf(model.state(), config) : model.state(),
                   {{"format", "pt"}});
  if (tokenizer != nullptr) tokenizer->save(dir / tokenizer->file_name());
  if (space != nullptr) {
    model::check_elastic_space(*space, model.config(), (dir / model::kElasticSpaceFile).string());
    model::save_elastic_space(dir, *space);
  }
}

}  // namespace flextron::io
