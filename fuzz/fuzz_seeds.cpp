#include "fuzz_seeds.h"

#include <fstream>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "io/atomic_file.h"
#include "io/gguf_model.h"
#include "io/llama2c_checkpoint.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "route/latency.h"
#include "route/router_file.h"
#include "text/bpe.h"
#include "text/tokenizer.h"

namespace flextron::fuzz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void put(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  io::write_text_atomically(dir / name, bytes);
}

// A byte-level BPE (GPT-2 style): the 256 byte symbols and a few merges.
json byte_level_tokenizer() {
  json vocab = json::object();
  const auto& symbols = text::byte_level_symbols();
  for (size_t i = 0; i < symbols.size(); ++i) vocab[symbols[i]] = i;
  const std::vector<std::string> merges = {"H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or"};
  for (const auto& m : merges) {
    std::string joined = m;
    joined.erase(joined.find(' '), 1);
    vocab[joined] = vocab.size();
  }
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  return {{"version", "1.0"},
          {"added_tokens", json::array({{{"id", vocab.size()},
                                         {"content", "<|endoftext|>"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", true}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"decoder", byte_level},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"dropout", nullptr}}}};
}

// A SentencePiece-style BPE (Llama): "▁" for spaces, byte fallback tokens <0x00>..<0xFF>.
json sentencepiece_style_tokenizer() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  char hex[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    vocab[hex] = vocab.size();
  }
  for (const char* piece : {"▁", "H", "e", "l", "o", "w", "r", "d", "▁H", "ll", "▁He"})
    vocab[piece] = vocab.size();
  json tokenizer = json::parse(R"({"version": "1.0", "added_tokens": [
      {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
      {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": null,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}})");
  tokenizer["model"] = {
      {"type", "BPE"},         {"vocab", vocab},   {"merges", {"▁ H", "l l", "▁H e"}},
      {"byte_fallback", true}, {"fuse_unk", true}, {"unk_token", "<unk>"},
      {"dropout", nullptr}};
  return tokenizer;
}

// A string literal with its embedded NUL bytes.
template <size_t N>
std::string literal(const char (&bytes)[N]) {
  return std::string(bytes, N - 1);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

void write_seeds(const fs::path& dir, const fs::path& shared_data) {
  torch::manual_seed(7);
  const auto config = tiny_config();
  model::Transformer model(config);
  const auto tok512 = shared_data / "stories260K" / "tok512.bin";
  std::unique_ptr<text::Tokenizer> tokenizer;
  if (fs::exists(tok512)) {
    tokenizer = text::load_llama2c_tokenizer(tok512, config.vocab_size);
    put(dir / "tokenizer_bin", "tok512.bin", read_file(tok512));
  }

  fs::create_directories(dir / "gguf");
  io::save_gguf_model(dir / "gguf" / "tiny-f32.gguf", *model, tokenizer.get(),
                      quant::GgmlType::F32);
  io::save_gguf_model(dir / "gguf" / "tiny-q8_0.gguf", *model, tokenizer.get(),
                      quant::GgmlType::Q8_0);
  io::save_gguf_model(dir / "gguf" / "tiny-q4_0.gguf", *model, tokenizer.get(),
                      quant::GgmlType::Q4_0);

  const auto scratch = dir / ".model";
  io::save_model_dir(scratch / "f32", *model, tokenizer.get());
  io::save_model_dir(scratch / "q8_0", *model, tokenizer.get(), nullptr, quant::GgmlType::Q8_0);
  put(dir / "safetensors", "f32.safetensors", read_file(scratch / "f32" / "model.safetensors"));
  put(dir / "safetensors", "q8_0.safetensors", read_file(scratch / "q8_0" / "model.safetensors"));

  fs::create_directories(dir / "llama2c");
  io::TensorMap tensors;
  for (const auto& item : model->named_parameters()) tensors[item.key()] = item.value().detach();
  io::write_llama2c_checkpoint(dir / "llama2c" / "tiny.bin", config, tensors);

  put(dir / "config_json", "llama.json", model::config_to_json(config).dump(2));
  put(dir / "config_json", "gpt2.json", model::config_to_json(model::gpt2_variant(config)).dump(2));
  auto per_layer = config;
  per_layer.layer_intermediate_sizes = {64, 32};
  per_layer.layer_key_value_heads = {2, 1};
  put(dir / "config_json", "per-layer.json", model::config_to_json(per_layer).dump(2));

  // route_files: the first byte picks the file (0 latency.json, 1 flextron.json, 2 router.json).
  const auto space = model::default_elastic_space(config);
  route::ProfileOptions profile;
  profile.contexts = {16};
  profile.prefill_tokens = 8;
  profile.warmup = 0;
  profile.repeats = 1;
  profile.calibration_architectures = 2;
  profile.rounds = 1;
  const auto table = route::profile_latency(*model, space, profile);
  put(dir / "route_files", "latency.json",
      std::string(1, '\0') + route::latency_table_to_json(table).dump());
  put(dir / "route_files", "flextron.json",
      std::string(1, '\1') + model::elastic_space_to_json(space).dump());
  fs::create_directories(scratch / "routers");
  route::save_routers(scratch / "routers", route::make_routers(config, space, kTinyBudgets, true));
  put(dir / "route_files", "router.json",
      std::string(1, '\2') + read_file(scratch / "routers" / route::kRouterFile));
  fs::remove_all(scratch);

  put(dir / "tokenizer_json", "byte-level.json", byte_level_tokenizer().dump());
  put(dir / "tokenizer_json", "sentencepiece-style.json", sentencepiece_style_tokenizer().dump());

  const auto requests = dir / "request";
  put(requests, "completion.json",
      R"({"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7,
          "top_p": 0.9, "stop": ["\n", "The end"], "stream": true, "seed": 3, "budget": 0.5})");
  put(requests, "prompt-ids.json", R"({"prompt": [1, 15043, 3186], "max_tokens": 4, "n": 1})");
  put(requests, "chat.json",
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
          "max_completion_tokens": 8, "stream": true, "stream_options": {"include_usage": true},
          "logprobs": true, "top_logprobs": 2})");

  put(requests, "json-schema.json",
      R"({"prompt": "A cat:", "max_tokens": 64, "response_format": {"type": "json_schema",
          "json_schema": {"name": "cat", "strict": true, "schema": {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"},
          "tags": {"type": "array", "items": {"enum": ["a", 1, null]}, "maxItems": 2},
          "owner": {"anyOf": [{"$ref": "#/$defs/person"}, {"type": "null"}]}},
          "required": ["name", "age"], "additionalProperties": false,
          "$defs": {"person": {"type": "object", "properties": {"n": {"type": ["string", "null"]}}}}}}}})");
  put(requests, "json-object.json",
      R"({"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}})");
  put(dir / "json_schema", "object.bin",
      literal("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},"
              "\"b\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},\"required\":[\"a\"]}"
              "\0{\"a\": -1.5e3, \"b\": [\"x\\n\", \"\xc3\xa9\"]}"));
  put(dir / "json_schema", "any.bin", literal("{}\0[1,{\"k\":[true,null,\"s\"]},2]"));

  const auto streams = dir / "text_stream";
  put(streams, "one-stop.bin", literal("\x01The end\0Once upon\0 a time. The e\0nd."));
  put(streams, "utf8.bin", literal("\x02\xc3\xa9t\xc3\0\n\n\0caf\xc3\0\xa9 \xe2\x96\0\x81ok"));
  put(streams, "no-stop.bin", literal("\x00Hello\0, \0world"));
}

}  // namespace flextron::fuzz
