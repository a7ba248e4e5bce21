// One BPE engine for every merge-based vocabulary: HF/GPT-2 BPE (merges by rank) and
// SentencePiece / llama.cpp `llama` vocabularies (bigrams merged by the score of the merged piece).
// A word (one pre-token) becomes symbols (its UTF-8 characters, or its bytes mapped through GPT-2's
// bytes_to_unicode when byte_level), and adjacent symbols merge, best priority first, leftmost
// on ties, through a heap over a linked list: O(n log n) per word.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace flextron::text {

struct BpeOptions {
  bool byte_level = false;     // map each byte of a word to GPT-2's printable stand-in first
  bool byte_fallback = false;  // a character not in the vocabulary becomes its "<0xXX>" pieces
  bool ignore_merges = false;  // a word that is itself a piece is that piece (Llama-3)
  std::string unk_token;       // piece for unknown characters ("" = drop them, as HF does)
  bool fuse_unk = false;       // consecutive unknowns become one unk
};

// GPT-2's bytes_to_unicode(): byte -> UTF-8 of its stand-in code point.
const std::array<std::string, 256>& byte_level_symbols();
// The inverse: appends the bytes that `text` (byte-level symbols) stands for; false if some
// character is not a byte-level symbol (nothing is appended then).
bool byte_level_decode(std::string_view text, std::string* out);

class BpeModel {
 public:
  using Merge = std::pair<std::string, std::string>;
  // pieces[id] is the vocabulary ("" for an id no piece has). With `scores` empty, `merges`
  // rank the pairs (HF BPE); otherwise two symbols merge when their concatenation is a piece p
  // with mergeable[p], best score first, and `merges` must be empty. Throws flextron::Error
  // (prefixed by `where`) for a merge of symbols not in the vocabulary, naming its index.
  BpeModel(std::vector<std::string> pieces, const std::vector<Merge>& merges,
           std::vector<float> scores, std::vector<bool> mergeable, BpeOptions options,
           const std::string& where);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one word.
  void encode_word(std::string_view word, std::vector<int64_t>* ids) const;

  int64_t id(std::string_view piece) const;  // -1 if absent
  const std::string& piece(int64_t id) const { return pieces_[static_cast<size_t>(id)]; }
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  const BpeOptions& options() const { return options_; }
  bool score_merges() const { return !scores_.empty(); }
  float score(int64_t id) const;
  // The merges by rank, "a b" (rank mode), or derived from the scores (score mode) as HF's
  // SentencePiece converter does: every split of a mergeable piece into two pieces, by score.
  std::vector<Merge> merge_list() const;

 private:
  struct PairInfo {
    double priority;  // lower merges first: the rank, or minus the score
    int32_t result;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void add_unknown(std::string_view chars, std::vector<int32_t>* symbols, bool* last_unk) const;

  std::vector<std::string> pieces_;
  std::unordered_map<std::string_view, int32_t> ids_;  // views into pieces_
  std::unordered_map<uint64_t, PairInfo> pairs_;
  std::vector<Merge> merges_;  // rank mode: as given
  std::vector<float> scores_;
  std::vector<bool> mergeable_;
  BpeOptions options_;
  std::array<int32_t, 256> byte_ids_{};      // byte_level: the id of each byte's symbol
  std::array<int32_t, 256> fallback_ids_{};  // byte_fallback: the id of "<0xXX>"
  bool all_fallback_ = false;
  int32_t unk_ = -1;
};

}  // namespace flextron::text
