// llama2.c's tokenizer.bin and its encode()/decode() from run.c, reproduced token for token.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "text/tokenizer.h"

namespace flextron::text {

namespace detail {
// Defined in tokenizer.cpp: the BOS-space and "<0xXX>" rules shared by every format.
std::string decode_piece_text(int64_t prev, int64_t bos, std::string piece);
}  // namespace detail

namespace {

constexpr int64_t kBos = 1;  // llama2.c hard-codes these ids.
constexpr int64_t kEos = 2;
constexpr int64_t kByteOffset = 3;  // byte b falls back to the piece "<0xBB>" at id b + 3.
constexpr float kNoMerge = -1e10f;  // run.c's initial best_score: merges must beat it.

void write_llama2c(const std::filesystem::path& path, int32_t max_token_length,
                   const std::vector<std::string>& pieces, const std::vector<float>& scores) {
  io::write_file_atomically(path, [&](std::ostream& out) {
    auto put = [&](const void* data, size_t n) {
      out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    };
    put(&max_token_length, sizeof(max_token_length));
    for (size_t i = 0; i < pieces.size(); ++i) {
      const auto len = static_cast<int32_t>(pieces[i].size());
      put(&scores[i], sizeof(float));
      put(&len, sizeof(len));
      put(pieces[i].data(), pieces[i].size());
    }
  });
}

class Llama2cTokenizer : public Tokenizer {
 public:
  Llama2cTokenizer(std::filesystem::path path, int32_t max_token_length,
                   std::vector<std::string> pieces, std::vector<float> scores)
      : path_(std::move(path)),
        max_token_length_(max_token_length),
        pieces_(std::move(pieces)),
        scores_(std::move(scores)) {
    // Duplicate pieces: keep the lowest id (run.c's bsearch leaves the choice unspecified).
    lookup_.reserve(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i)
      lookup_.emplace(pieces_[i], static_cast<int32_t>(i));
  }

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int32_t> tokens;
    tokens.reserve(text.size() + 2);
    if (add_bos) tokens.push_back(kBos);
    if (!text.empty()) {
      // add_dummy_prefix: the text starts with a space, as SentencePiece's Llama model does.
      const int32_t space = find(" ");
      tokens.push_back(space >= 0 ? space : byte_token(' '));
    }
    // One token per UTF-8 codepoint (at most 4 bytes), else one byte-fallback token per byte.
    std::string buffer;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if ((c & 0xC0) != 0x80) buffer.clear();
      buffer.push_back(static_cast<char>(c));
      const bool continues =
          i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
      if (continues && buffer.size() < 4) continue;
      const int32_t id = find(buffer);
      if (id >= 0) {
        tokens.push_back(id);
      } else {
        for (char b : buffer) tokens.push_back(byte_token(static_cast<unsigned char>(b)));
      }
      buffer.clear();
    }
    merge(tokens);
    return std::vector<int64_t>(tokens.begin(), tokens.end());
  }

  std::string decode_piece(int64_t prev, int64_t token) const override {
    return detail::decode_piece_text(prev, kBos, pieces_[checked(token)]);
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return kBos; }
  int64_t eos_id() const override { return kEos; }
  std::string piece(int64_t id) const override { return pieces_[checked(id)]; }
  float score(int64_t id) const override { return scores_[checked(id)]; }
  std::string file_name() const override { return "tokenizer.bin"; }
  std::string kind() const override { return "llama2c"; }

  void save(const std::filesystem::path& path) const override {
    // Verbatim, header included, so that a copy is byte-identical to the original.
    write_llama2c(path, max_token_length_, pieces_, scores_);
  }

 private:
  int32_t find(const std::string& piece) const {
    const auto it = lookup_.find(piece);
    return it == lookup_.end() ? -1 : it->second;
  }

  int32_t byte_token(unsigned char byte) const {
    const int64_t id = byte + kByteOffset;
    if (id >= vocab_size()) {
      fail(path_.string(), "text needs byte fallback for byte " + std::to_string(byte) +
                               " but the vocabulary has only " + std::to_string(vocab_size()) +
                               " tokens");
    }
    return static_cast<int32_t>(id);
  }

  size_t checked(int64_t id) const {
    if (id < 0 || id >= vocab_size()) {
      fail(path_.string(), "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(vocab_size()) + ")");
    }
    return static_cast<size_t>(id);
  }

  // run.c repeatedly merges the adjacent pair whose concatenation is in the vocabulary with the
  // highest score, the leftmost on ties. That is quadratic; a max-heap over the live pairs with
  // lazy invalidation makes the same choices in O(n log n), which matters for whole corpora.
  void merge(std::vector<int32_t>& tokens) const {
    const auto n = static_cast<int32_t>(tokens.size());
    if (n < 2) return;
    std::vector<int32_t> prev(n), next(n);
    std::vector<uint32_t> version(n, 0);
    for (int32_t i = 0; i < n; ++i) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    struct Candidate {
      float score;
      int32_t left, right, id;
      uint32_t left_version, right_version;
    };
    // Symbols never move, so the leftmost pair is the one with the smallest left index.
    auto worse = [](const Candidate& a, const Candidate& b) {
      return a.score != b.score ? a.score < b.score : a.left > b.left;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
    auto consider = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const int32_t id = find(pieces_[tokens[left]] + pieces_[tokens[right]]);
      // Written as !(>) so that NaN scores never merge, as in run.c's comparison.
      if (id < 0 || !(scores_[id] > kNoMerge)) return;
      heap.push({scores_[id], left, right, id, version[left], version[right]});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      if (tokens[c.left] < 0 || tokens[c.right] < 0 || next[c.left] != c.right ||
          version[c.left] != c.left_version || version[c.right] != c.right_version) {
        continue;  // stale: one side has merged since this pair was pushed
      }
      tokens[c.left] = c.id;
      ++version[c.left];
      tokens[c.right] = -1;
      next[c.left] = next[c.right];
      if (next[c.right] >= 0) prev[next[c.right]] = c.left;
      consider(prev[c.left], c.left);
      consider(c.left, next[c.left]);
    }
    size_t out = 0;
    for (int32_t t : tokens)
      if (t >= 0) tokens[out++] = t;
    tokens.resize(out);
  }

  std::filesystem::path path_;
  int32_t max_token_length_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> lookup_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path,
                                                  int64_t vocab_size) {
  const std::string where = path.string();
  if (vocab_size <= 0 || vocab_size > INT32_MAX)
    fail(where, "invalid vocab_size " + std::to_string(vocab_size));
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fail(where,
         std::filesystem::exists(path) ? "cannot open tokenizer file" : "tokenizer file not found");
  }
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(where, "read error");
  if (data.empty()) fail(where, "empty tokenizer file");

  size_t pos = 0;
  auto read_i32 = [&](int32_t& value) {
    if (data.size() - pos < sizeof(value)) return false;
    std::memcpy(&value, data.data() + pos, sizeof(value));
    pos += sizeof(value);
    return true;
  };
  // One token record; an empty string on success, else why it could not be read.
  auto read_token = [&](std::string& piece, float& score) -> std::string {
    if (pos == data.size()) return "end of file";
    if (data.size() - pos < sizeof(float) + sizeof(int32_t)) return "truncated record header";
    std::memcpy(&score, data.data() + pos, sizeof(float));
    pos += sizeof(float);
    int32_t len = 0;
    read_i32(len);
    if (len < 0) return "negative length " + std::to_string(len);
    if (static_cast<size_t>(len) > data.size() - pos) {
      return "length " + std::to_string(len) + " overflows the file (" +
             std::to_string(data.size() - pos) + " bytes left)";
    }
    piece.assign(data, pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    return "";
  };

  int32_t max_token_length = 0;
  if (!read_i32(max_token_length))
    fail(where, "truncated: " + std::to_string(data.size()) + " bytes, no header");
  if (max_token_length < 0)
    fail(where, "negative max_token_length " + std::to_string(max_token_length));

  std::vector<std::string> pieces(static_cast<size_t>(vocab_size));
  std::vector<float> scores(static_cast<size_t>(vocab_size));
  for (int64_t i = 0; i < vocab_size; ++i) {
    const std::string error = read_token(pieces[i], scores[i]);
    if (error == "end of file") {
      fail(where, "vocab size mismatch: the file holds " + std::to_string(i) +
                      " tokens but the model's vocab_size is " + std::to_string(vocab_size));
    }
    if (!error.empty()) fail(where, "token " + std::to_string(i) + ": " + error);
  }
  if (pos != data.size()) {
    // Count what follows, so that the message says how big the file's vocabulary really is.
    int64_t extra = 0;
    std::string piece;
    float score = 0;
    while (read_token(piece, score).empty()) ++extra;
    fail(where, "vocab size mismatch: the model's vocab_size is " + std::to_string(vocab_size) +
                    " but the file holds " +
                    (pos == data.size()
                         ? std::to_string(vocab_size + extra)
                         : "more (with " + std::to_string(data.size() - pos) + " trailing bytes)") +
                    " tokens");
  }
  return std::make_unique<Llama2cTokenizer>(path, max_token_length, std::move(pieces),
                                            std::move(scores));
}

void save_llama2c_tokenizer(const Tokenizer& tokenizer, const std::filesystem::path& path) {
  // As llama2.c's tokenizer.py export(): BOS/EOS get visible pieces, "▁" becomes ' '.
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581
  const int64_t n = tokenizer.vocab_size();
  std::vector<std::string> pieces(static_cast<size_t>(n));
  std::vector<float> scores(static_cast<size_t>(n));
  size_t max_len = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::string piece = i == tokenizer.bos_id()   ? "\n<s>\n"
                        : i == tokenizer.eos_id() ? "\n</s>\n"
                                                  : tokenizer.piece(i);
    for (size_t at = piece.find(kSpace); at != std::string::npos; at = piece.find(kSpace, at + 1))
      piece.replace(at, kSpace.size(), " ");
    max_len = std::max(max_len, piece.size());
    pieces[i] = std::move(piece);
    scores[i] = tokenizer.score(i);
  }
  write_llama2c(path, static_cast<int32_t>(max_len), pieces, scores);
}

}  // namespace flextron::text
