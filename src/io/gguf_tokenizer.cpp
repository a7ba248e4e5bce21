#include "io/gguf_tokenizer.h"

#include "core/error.h"
#include "text/hf_tokenizer.h"

namespace flextron::io {

using nlohmann::json;

namespace {

const std::string kSpace = "\xE2\x96\x81";  // SentencePiece's U+2581 for ' '

enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};

}  // namespace

std::unique_ptr<text::Tokenizer> gguf_tokenizer(const GgufMetadata& m, const std::string& where) {
  auto find = [&](const std::string& key) -> const json* {
    auto it = m.find(key);
    return it == m.end() ? nullptr : &it->second.value;
  };
  auto get = [&](const std::string& key) -> const json& {
    const json* v = find(key);
    if (v == nullptr) fail(where, "missing metadata key " + key);
    return *v;
  };
  auto flag = [&](const std::string& key, bool fallback) {
    const json* v = find(key);
    return v == nullptr ? fallback : v->get<bool>();
  };
  try {
    const auto model = get("tokenizer.ggml.model").get<std::string>();
    if (model != "llama" && model != "gpt2")
      fail(where, "tokenizer.ggml.model \"" + model + "\" is not supported (llama, gpt2)");
    const bool spm = model == "llama";
    const auto tokens = get("tokenizer.ggml.tokens").get<std::vector<std::string>>();
    std::vector<int32_t> types(tokens.size(), kNormal);
    if (const json* t = find("tokenizer.ggml.token_type")) {
      types = t->get<std::vector<int32_t>>();
      if (types.size() != tokens.size())
        fail(where, "tokenizer.ggml.token_type and tokens differ in length");
    }
    auto token_id = [&](const char* key) -> int64_t {
      const json* v = find(std::string("tokenizer.ggml.") + key);
      if (v == nullptr) return -1;
      const auto id = v->get<int64_t>();
      if (id < 0 || id >= static_cast<int64_t>(tokens.size()))
        fail(where, std::string("tokenizer.ggml.") + key + " " + std::to_string(id) +
                        " is outside the vocabulary");
      return id;
    };
    const int64_t bos = token_id("bos_token_id"), eos = token_id("eos_token_id");
    int64_t unk = token_id("unknown_token_id");

    text::HfSource s;
    s.where = where;
    json vocab = json::object(), added = json::array();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!vocab.contains(tokens[i])) vocab[tokens[i]] = i;  // a repeated piece keeps its first id
      const int32_t type = types[i];
      if (type == kUnknown && unk < 0) unk = static_cast<int64_t>(i);
      // llama.cpp splits control and user-defined tokens out of the text before the model runs.
      if (type == kControl || type == kUnknown || type == kUserDefined)
        added.push_back({{"id", i},
                         {"content", tokens[i]},
                         {"single_word", false},
                         {"lstrip", false},
                         {"rstrip", false},
                         {"normalized", false},
                         {"special", type != kUserDefined}});
    }
    json& j = s.tokenizer;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    j["added_tokens"] = added;
    j["post_processor"] = nullptr;
    json& c = s.config;
    c["add_bos_token"] = flag("tokenizer.ggml.add_bos_token", spm);
    c["add_eos_token"] = flag("tokenizer.ggml.add_eos_token", false);
    if (bos >= 0) c["bos_token"] = tokens[static_cast<size_t>(bos)];
    if (eos >= 0) c["eos_token"] = tokens[static_cast<size_t>(eos)];
    if (unk >= 0) c["unk_token"] = tokens[static_cast<size_t>(unk)];
    if (const json* t = find("tokenizer.chat_template")) c["chat_template"] = *t;
    c["tokenizer_class"] = "PreTrainedTokenizerFast";
    // End-of-turn tokens also end generation (llama.cpp's eot / eom ids).
    json ends = json::array();
    if (eos >= 0) ends.push_back(eos);
    for (const char* key : {"eot_token_id", "eom_token_id"}) {
      const int64_t id = token_id(key);
      if (id >= 0 && id != eos) ends.push_back(id);
    }
    if (ends.size() > 1) s.generation = {{"eos_token_id", ends}};

    if (spm) {
      const auto scores = get("tokenizer.ggml.scores").get<std::vector<float>>();
      if (scores.size() != tokens.size())
        fail(where, "tokenizer.ggml.scores and tokens differ in length");
      s.scores = scores;
      s.mergeable.resize(tokens.size());
      for (size_t i = 0; i < tokens.size(); ++i) s.mergeable[i] = types[i] == kNormal;
      const bool prefix = flag("tokenizer.ggml.add_space_prefix", true);
      json replace = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}};
      j["normalizer"] =
          prefix ? json{{"type", "Sequence"},
                        {"normalizers", {{{"type", "Prepend"}, {"prepend", kSpace}}, replace}}}
                 : replace;
      j["pre_tokenizer"] = nullptr;
      json model = {{"type", "BPE"},
                    {"dropout", nullptr},
                    {"unk_token", nullptr},
                    {"continuing_subword_prefix", nullptr},
                    {"end_of_word_suffix", nullptr},
                    {"fuse_unk", true},
                    {"byte_fallback", true},
                    {"ignore_merges", false},
                    {"vocab", vocab},
                    {"merges", json::array()}};
      if (unk >= 0) model["unk_token"] = tokens[static_cast<size_t>(unk)];
      j["model"] = model;
      json decoders = {{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                       {{"type", "ByteFallback"}},
                       {{"type", "Fuse"}}};
      if (prefix)
        decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
      j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
      s.kind = "gguf-llama";
    } else {
      const json* pre_value = find("tokenizer.ggml.pre");
      const std::string pre = pre_value ? pre_value->get<std::string>() : "default";
      const auto regexes = text::llama_cpp_pre_regexes(pre, where);
      json steps = json::array();
      for (const auto& r : regexes)
        steps.push_back({{"type", "Split"},
                         {"pattern", {{"Regex", r}}},
                         {"behavior", "Isolated"},
                         {"invert", false}});
      steps.push_back({{"type", "ByteLevel"},
                       {"add_prefix_space", false},
                       {"trim_offsets", false},
                       {"use_regex", false}});
      j["normalizer"] = nullptr;
      j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
      const bool llama3 = text::llama_cpp_pre_regexes("llama-bpe", "") == regexes;
      j["model"] = {{"type", "BPE"},
                    {"dropout", nullptr},
                    {"unk_token", nullptr},
                    {"continuing_subword_prefix", nullptr},
                    {"end_of_word_suffix", nullptr},
                    {"fuse_unk", false},
                    {"byte_fallback", false},
                    {"ignore_merges", llama3 || pre == "tekken"},
                    {"vocab", vocab},
                    {"merges", get("tokenizer.ggml.merges")}};
      j["decoder"] = {{"type", "ByteLevel"},
                      {"add_prefix_space", true},
                      {"trim_offsets", true},
                      {"use_regex", true}};
      // llama.cpp's default: a BOS only for the Llama-3-like pre-tokenizers.
      if (!find("tokenizer.ggml.add_bos_token")) c["add_bos_token"] = llama3 || pre == "tekken";
      s.kind = "gguf-gpt2/" + pre;
    }
    return std::make_unique<text::HfTokenizer>(std::move(s));
  } catch (const json::exception& e) {
    fail(where, std::string("malformed tokenizer metadata: ") + e.what());
  }
}

std::unique_ptr<text::Tokenizer> load_tokenizer_path(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) return text::load_tokenizer(path, 0);
  const auto ext = path.extension().string();
  if (ext == ".gguf") return gguf_tokenizer(read_gguf(path).metadata, path.string());
  if (ext == ".model") return text::load_sentencepiece_tokenizer(path);
  if (path.filename() == "vocab.json")
    return text::load_gpt2_tokenizer(path, path.parent_path() / "merges.txt");
  if (ext == ".json") return text::load_hf_tokenizer(path);
  fail(path.string(),
       "not a tokenizer (a model directory, .gguf, tokenizer.json, .model or "
       "vocab.json)");
}

}  // namespace flextron::io
