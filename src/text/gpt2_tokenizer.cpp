// GPT-2's byte-level BPE (vocab.json + merges.txt), as OpenAI's encoder.py and HF's GPT2Tokenizer
// compute it:
//  1. pre-tokenize with GPT-2's pattern (PCRE2, Unicode properties):
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//  2. map each byte of a pre-token to a printable code point (bytes_to_unicode: the printable
//     Latin-1 bytes stand for themselves, the other 68 bytes for U+0100.. in order), so the
//     vocabulary is text;
//  3. merge adjacent symbols, lowest merge rank first, until no ranked pair is left;
//  4. look the symbols up in the vocabulary.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fstream>
#include <map>
#include <memory>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "text/tokenizer.h"

namespace flextron::text {

namespace {

constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kEndOfText = "<|endoftext|>";

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// bytes_to_unicode(): byte -> the UTF-8 of its stand-in code point.
std::array<std::string, 256> byte_symbols() {
  std::array<std::string, 256> out;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    out[static_cast<size_t>(b)] = utf8(printable ? static_cast<uint32_t>(b) : next++);
  }
  return out;
}

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};

class Gpt2Tokenizer : public Tokenizer {
 public:
  Gpt2Tokenizer(const std::filesystem::path& vocab_path, const std::filesystem::path& merges_path)
      : symbols_(byte_symbols()) {
    for (int b = 0; b < 256; ++b)
      symbol_byte_[symbols_[static_cast<size_t>(b)]] = static_cast<char>(b);
    load_vocab(vocab_path);
    load_merges(merges_path);
    int error = 0;
    PCRE2_SIZE offset = 0;
    regex_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                               PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset,
                               nullptr));
    if (!regex_) fail("GPT-2 tokenizer", "cannot compile the pre-tokenization pattern");
  }

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int64_t> ids;
    if (add_bos) ids.push_back(eot_);
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(regex_.get(), nullptr), &pcre2_match_data_free);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t at = 0;
    while (at < text.size()) {
      const int rc = pcre2_match(regex_.get(), subject, text.size(), at, 0, match.get(), nullptr);
      size_t start = text.size(), end = text.size();
      if (rc > 0) {
        const auto* ov = pcre2_get_ovector_pointer(match.get());
        start = ov[0];
        end = ov[1];
      }
      // Bytes the pattern skips (invalid UTF-8) still become tokens: byte-level BPE covers all.
      if (start > at) encode_word(text.substr(at, start - at), &ids);
      if (end > start) encode_word(text.substr(start, end - start), &ids);
      at = std::max(end, start + (end == start ? 1 : 0));
      if (rc <= 0) break;
    }
    return ids;
  }

  std::string decode_piece(int64_t, int64_t token) const override {
    if (token < 0 || token >= vocab_size() || token == eot_) return "";
    const std::string& piece = pieces_[static_cast<size_t>(token)];
    std::string out;
    for (size_t i = 0; i < piece.size();) {
      size_t len = 1;
      const auto c = static_cast<unsigned char>(piece[i]);
      if (c >= 0xC0) len = c >= 0xE0 ? 3 : 2;
      auto it = symbol_byte_.find(piece.substr(i, len));
      if (it != symbol_byte_.end()) out += it->second;
      i += len;
    }
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return eot_; }
  int64_t eos_id() const override { return eot_; }
  std::string piece(int64_t id) const override { return pieces_.at(static_cast<size_t>(id)); }
  // BPE has merge ranks, not piece scores; GGUF stores the merges themselves.
  float score(int64_t) const override { return 0.0f; }
  std::vector<std::string> merges() const override { return merges_; }
  std::string file_name() const override { return "vocab.json"; }

  void save(const std::filesystem::path& path) const override {
    nlohmann::json vocab = nlohmann::json::object();
    for (size_t i = 0; i < pieces_.size(); ++i) vocab[pieces_[i]] = i;
    io::write_text_atomically(path, vocab.dump());
    std::string merges = "#version: 0.2\n";
    for (const auto& m : merges_) merges += m + "\n";
    io::write_text_atomically(path.parent_path() / "merges.txt", merges);
  }

 private:
  void load_vocab(const std::filesystem::path& path) {
    const auto j = io::read_json_file(path);
    if (!j.is_object() || j.empty()) fail(path, "expected a JSON object of piece -> id");
    pieces_.resize(j.size());
    for (const auto& [piece, id] : j.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<uint64_t>() >= pieces_.size() || !pieces_[id.get<size_t>()].empty())
        fail(path, "piece \"" + piece + "\" has an id that is not unique in [0, " +
                       std::to_string(pieces_.size()) + ")");
      pieces_[id.get<size_t>()] = piece;
      ids_[piece] = id.get<int64_t>();
    }
    auto it = ids_.find(kEndOfText);
    eot_ = it == ids_.end() ? -1 : it->second;
  }

  void load_merges(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open (missing file?)");
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const auto space = line.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == line.size() ||
          line.find(' ', space + 1) != std::string::npos)
        fail(path.string() + ":" + std::to_string(number),
             "expected two symbols, got \"" + line + "\"");
      if (!ids_.count(line.substr(0, space) + line.substr(space + 1)))
        fail(path.string() + ":" + std::to_string(number),
             "the merge of \"" + line + "\" is not in the vocabulary");
      ranks_.emplace(line, static_cast<int64_t>(merges_.size()));
      merges_.push_back(line);
    }
    if (merges_.empty()) fail(path, "no merges");
  }

  // One pre-token: bytes -> symbols -> merged by rank -> ids.
  void encode_word(const std::string& bytes, std::vector<int64_t>* ids) const {
    std::vector<std::string> parts;
    for (unsigned char b : bytes) parts.push_back(symbols_[b]);
    while (parts.size() > 1) {
      int64_t best = -1;
      size_t at = 0;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        auto it = ranks_.find(parts[i] + " " + parts[i + 1]);
        if (it != ranks_.end() && (best < 0 || it->second < best)) best = it->second, at = i;
      }
      if (best < 0) break;
      // Merge every occurrence of the best pair, left to right (encoder.py's bpe()).
      const std::string a = parts[at], b = parts[at + 1];
      std::vector<std::string> merged;
      for (size_t i = 0; i < parts.size(); ++i) {
        if (i + 1 < parts.size() && parts[i] == a && parts[i + 1] == b) {
          merged.push_back(a + b);
          ++i;
        } else {
          merged.push_back(parts[i]);
        }
      }
      parts.swap(merged);
    }
    for (const auto& p : parts) {
      auto it = ids_.find(p);
      if (it == ids_.end())
        fail("GPT-2 tokenizer", "symbol \"" + p + "\" is not in the vocabulary");
      ids->push_back(it->second);
    }
  }

  std::array<std::string, 256> symbols_;
  std::unordered_map<std::string, char> symbol_byte_;
  std::vector<std::string> pieces_;
  std::unordered_map<std::string, int64_t> ids_;
  std::vector<std::string> merges_;
  std::unordered_map<std::string, int64_t> ranks_;  // "a b" -> rank
  int64_t eot_ = -1;
  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> regex_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::filesystem::path& vocab_json,
                                               const std::filesystem::path& merges_txt) {
  return std::make_unique<Gpt2Tokenizer>(vocab_json, merges_txt);
}

}  // namespace flextron::text
