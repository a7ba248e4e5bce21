#include "io/model_dir.h"

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/hf_gpt2.h"
#include "model/extract.h"

namespace flextron::io {

namespace fs = std::filesystem;

TensorMap load_model_tensors(const fs::path& dir, Metadata* metadata) {
  const auto single = dir / "model.safetensors";
  if (fs::exists(single)) return load_safetensors(single, metadata);
  const auto index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    const auto index = read_json_file(index_path);
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail(index_path.string(), "no \"weight_map\" object");
    std::map<std::string, std::vector<std::string>> shards;  // file -> the names it must hold
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string())
        fail(index_path.string(), "weight_map entry '" + name + "' is not a file name");
      const auto shard = file.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..")
        fail(index_path.string(),
             "weight_map entry '" + name + "' names '" + shard + "', not a file in this directory");
      shards[shard].push_back(name);
    }
    TensorMap all;
    for (const auto& [shard, names] : shards) {
      Metadata shard_meta;
      auto part = load_safetensors(dir / shard, &shard_meta);
      for (const auto& name : names)
        if (!part.count(name))
          fail((dir / shard).string(),
               "missing tensor '" + name + "' (model.safetensors.index.json puts it here)");
      all.insert(part.begin(), part.end());
      if (metadata != nullptr) metadata->insert(shard_meta.begin(), shard_meta.end());
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

constexpr const char* kEmbed = "model.embed_tokens.weight";
constexpr const char* kHead = "lm_head.weight";

// The embedding / LM head pair as transformers may have stored it (see load_model_state).
void resolve_tied_embeddings(TensorMap& t, model::ModelConfig& c, bool tie_given,
                             const std::string& where, std::vector<std::string>& notes) {
  const bool embed = t.count(kEmbed) != 0, head = t.count(kHead) != 0;
  if (!tie_given && embed != head) {
    c.tie_word_embeddings = true;
    notes.push_back(std::string("config.json does not say tie_word_embeddings and only ") +
                    (embed ? kEmbed : kHead) + " is stored: the embeddings are tied");
  }
  if (!c.tie_word_embeddings) {
    if (embed && !head)
      fail(where, "missing tensor 'lm_head.weight' (config.json says tie_word_embeddings false)");
    return;
  }
  if (!embed && head) {
    t[kEmbed] = t.at(kHead);
    notes.push_back("tied embeddings are stored under lm_head.weight");
  } else if (embed && head) {
    if (!torch::equal(t.at(kEmbed).to(torch::kFloat), t.at(kHead).to(torch::kFloat)))
      fail(where,
           "tie_word_embeddings is true but lm_head.weight differs from model.embed_tokens.weight");
  }
  t.erase(kHead);
}

// Tensors that no parameter of `model` takes: rotary buffers, and anything else (named in a
// note, so a wrong architecture does not pass unseen).
void drop_unused(TensorMap& t, const model::TransformerImpl& model,
                 std::vector<std::string>& notes) {
  std::set<std::string> wanted;
  for (const auto& p : model.named_parameters(true)) wanted.insert(p.key());
  std::vector<std::string> extra;
  for (auto it = t.begin(); it != t.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    if (it->first.find("rotary_emb.inv_freq") == std::string::npos) extra.push_back(it->first);
    it = t.erase(it);
  }
  if (extra.empty()) return;
  std::string list;
  for (size_t i = 0; i < extra.size() && i < 4; ++i) list += (i ? ", " : "") + extra[i];
  if (extra.size() > 4) list += ", ...";
  notes.push_back("ignored " + std::to_string(extra.size()) +
                  " tensor(s) the model does not use: " + list);
}

}  // namespace

TensorMap load_model_state(const fs::path& dir, model::ModelConfig& config, bool tie_given,
                           std::vector<std::string>* notes, Metadata* metadata_out) {
  Metadata metadata;
  auto stored = load_model_tensors(dir, &metadata);
  if (metadata_out != nullptr) *metadata_out = metadata;
  if (config.gpt()) return gpt2_from_hf(stored, config, weights_name(dir));
  std::vector<std::string> local;
  auto& said = notes != nullptr ? *notes : local;
  // safetensors' alias map: {name not stored: name stored}.
  for (const auto& [name, target] : metadata) {
    if (stored.count(name) || !stored.count(target)) continue;
    stored[name] = stored.at(target);
    said.push_back("'" + name + "' is stored as its alias '" + target + "'");
  }
  resolve_tied_embeddings(stored, config, tie_given, weights_name(dir), said);
  return stored;
}

LoadedModel load_model_dir(const fs::path& dir, const LoadOptions& options) {
  if (!fs::is_directory(dir)) fail(dir.string(), "not a model directory");
  const auto config_path = dir / "config.json";
  const auto config_json = read_json_file(config_path);
  auto config = model::config_from_json(config_json, config_path.string());
  LoadedModel loaded;
  Metadata metadata;
  auto state = load_model_state(dir, config, config_json.contains("tie_word_embeddings"),
                                &loaded.notes, &metadata);
  if (auto it = metadata.find(kStoredWeightsKey); it != metadata.end()) {
    if (it->second != "f32" && it->second != "q8_0" && it->second != "q4_0")
      fail(weights_name(dir),
           std::string(kStoredWeightsKey) + " is '" + it->second + "', not f32, q8_0 or q4_0");
    loaded.stored_weights = it->second;
  }
  // The config's sizes against the weights before the model is allocated from them: a
  // config.json that claims far more parameters than the file holds (2^63 layers) is refused
  // here, not by running out of memory. Within twice the stored size the model is built and
  // the tensor-by-tensor check below names the missing or misshapen tensor instead.
  int64_t stored_numel = 0;
  for (const auto& [name, t] : state) stored_numel += t.numel();
  const int64_t wanted = model::subnetwork_parameter_count(config, {});
  if (wanted / 2 > stored_numel)
    fail(config_path.string(), "describes a model of " + std::to_string(wanted) +
                                   " parameters but " + weights_name(dir) + " holds " +
                                   std::to_string(stored_numel) +
                                   " values: the config does not belong to these weights");
  loaded.model = model::Transformer(config);
  // In the requested dtype before the copy: a float64 file loaded as float64 keeps every bit.
  loaded.model->to(options.device, options.dtype);
  if (!config.gpt()) drop_unused(state, *loaded.model, loaded.notes);
  loaded.model->load_state(state, weights_name(dir));
  state.clear();
  loaded.model->eval();
  loaded.space = model::load_elastic_space(dir, config);
  // A directory without tokenizer files still loads (the weights alone are useful); commands
  // that need text check for it.
  if (options.with_tokenizer && text::has_tokenizer_files(dir))
    loaded.tokenizer = text::load_tokenizer(dir, config.vocab_size);
  return loaded;
}

void save_model_dir(const fs::path& dir, model::TransformerImpl& model,
                    const text::Tokenizer* tokenizer, const model::ElasticSpace* space,
                    quant::GgmlType matrices) {
  fs::create_directories(dir);
  model::save_config(model.config(), dir / "config.json");
  // Each family in its own HuggingFace layout, so the directory loads in transformers too.
  const auto& config = model.config();
  const bool quantized = matrices != quant::GgmlType::F32;
  if (quantized && matrices != quant::GgmlType::Q8_0 && matrices != quant::GgmlType::Q4_0)
    fail(dir.string(), "matrices are stored as F32, Q8_0 or Q4_0");
  if (quantized && config.gpt())
    fail(dir.string(), "quantized directories hold Llama-family models (GPT-2: export to GGUF)");
  auto state = config.gpt() ? gpt2_to_hf(model.state(), config) : model.state();
  Metadata metadata{{"format", "pt"}};
  BlockTensorMap blocks;
  if (quantized) {
    metadata[kStoredWeightsKey] = matrices == quant::GgmlType::Q8_0 ? "q8_0" : "q4_0";
    // The matrices the fast runtime quantizes: every 2-D weight (blocks along its input
    // dimension, the last), row by row, a partial last block zero-padded.
    for (auto it = state.begin(); it != state.end();) {
      if (it->second.dim() != 2) {
        ++it;
        continue;
      }
      auto w = it->second.detach().to(torch::kCPU, torch::kFloat).contiguous();
      const int64_t rows = w.size(0), cols = w.size(1), padded = (cols + 31) / 32 * 32;
      const int64_t row_bytes = quant::bytes_of(matrices, padded);
      BlockTensor b{
          matrices, {rows, cols}, std::vector<uint8_t>(static_cast<size_t>(rows * row_bytes))};
      std::vector<float> row(static_cast<size_t>(padded), 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        std::copy(w[r].data_ptr<float>(), w[r].data_ptr<float>() + cols, row.begin());
        if (matrices == quant::GgmlType::Q8_0)
          quant::quantize_q8_0(row.data(), b.bytes.data() + r * row_bytes, padded);
        else
          quant::quantize_q4_0_fitted(row.data(), b.bytes.data() + r * row_bytes, padded);
      }
      blocks.emplace(it->first, std::move(b));
      it = state.erase(it);
    }
  }
  save_safetensors(dir / "model.safetensors", state, metadata, blocks);
  if (tokenizer != nullptr) tokenizer->save(dir / tokenizer->file_name());
  if (space != nullptr) {
    model::check_elastic_space(*space, model.config(), (dir / model::kElasticSpaceFile).string());
    model::save_elastic_space(dir, *space);
  }
}

}  // namespace flextron::io
