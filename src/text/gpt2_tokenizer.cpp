// GPT-2's byte-level BPE (vocab.json + merges.txt), as OpenAI's encoder.py and HF's GPT2Tokenizer
// compute it: pre-tokenize with GPT-2's pattern, map each byte to its printable stand-in
// (bytes_to_unicode), merge by rank, look the symbols up. It runs as the HF pipeline
// ByteLevel pre-tokenizer -> BPE -> ByteLevel decoder on the one engine (text/bpe.h); this
// file parses the two files and keeps their own format for save().
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "text/hf_tokenizer.h"

namespace flextron::text {

namespace {

using nlohmann::json;

constexpr const char* kEndOfText = "<|endoftext|>";

class Gpt2Tokenizer : public HfTokenizer {
 public:
  Gpt2Tokenizer(HfSource source, std::vector<std::string> merges)
      : HfTokenizer(std::move(source)), merge_lines_(std::move(merges)) {}

  std::vector<std::string> merges() const override { return merge_lines_; }
  std::string file_name() const override { return "vocab.json"; }
  std::string kind() const override { return "gpt2-bpe"; }

  void save(const std::filesystem::path& path) const override {
    json vocab = json::object();
    for (int64_t i = 0; i < vocab_size(); ++i) vocab[pieces_[static_cast<size_t>(i)]] = i;
    io::write_text_atomically(path, vocab.dump());
    std::string merges = "#version: 0.2\n";
    for (const auto& m : merge_lines_) merges += m + "\n";
    io::write_text_atomically(path.parent_path() / "merges.txt", merges);
  }

 private:
  std::vector<std::string> merge_lines_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::filesystem::path& vocab_path,
                                               const std::filesystem::path& merges_path) {
  const auto vocab = io::read_json_file(vocab_path);
  if (!vocab.is_object() || vocab.empty())
    fail(vocab_path, "expected a JSON object of piece -> id");
  std::vector<bool> seen(vocab.size(), false);
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() >= vocab.size() ||
        seen[id.get<size_t>()])
      fail(vocab_path, "piece \"" + piece + "\" has an id that is not unique in [0, " +
                           std::to_string(vocab.size()) + ")");
    seen[id.get<size_t>()] = true;
  }
  std::ifstream in(merges_path, std::ios::binary);
  if (!in) fail(merges_path, "cannot open (missing file?)");
  std::vector<std::string> merges;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const auto space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string::npos)
      fail(merges_path.string() + ":" + std::to_string(number),
           "expected two symbols, got \"" + line + "\"");
    if (!vocab.contains(line.substr(0, space) + line.substr(space + 1)))
      fail(merges_path.string() + ":" + std::to_string(number),
           "the merge of \"" + line + "\" is not in the vocabulary");
    merges.push_back(line);
  }
  if (merges.empty()) fail(merges_path, "no merges");

  HfSource s;
  s.where = vocab_path.string();
  s.kind = "gpt2-bpe";
  s.tokenizer = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  if (vocab.contains(kEndOfText)) {
    // HF's GPT2TokenizerFast: <|endoftext|> is BOS, EOS and a special token matched in text.
    s.tokenizer["added_tokens"] = json::array({{{"id", vocab[kEndOfText]},
                                                {"content", kEndOfText},
                                                {"special", true},
                                                {"normalized", false}}});
    s.config = {{"bos_token", kEndOfText}, {"eos_token", kEndOfText}};
  }
  return std::make_unique<Gpt2Tokenizer>(std::move(s), std::move(merges));
}

}  // namespace flextron::text
