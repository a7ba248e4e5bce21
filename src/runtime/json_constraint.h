// Constrained decoding for structured output: a JsonGrammar (runtime/json_grammar.h) over a
// tokenizer's vocabulary. Every step scans the whole vocabulary in byte order, feeding each
// token's bytes to a copy of the matcher; tokens sharing a prefix share its work (the state
// after each prefix byte is kept), and a prefix that fails skips every token that starts with
// it. A token is allowed when its bytes keep the output a valid prefix whose shortest
// completion fits in the tokens left, so the output always closes before max_tokens.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/json_grammar.h"
#include "runtime/token_constraint.h"
#include "text/tokenizer.h"

namespace flextron::runtime {

// The bytes each token writes in the middle of a text, sorted for prefix sharing. Control
// tokens and tokens that write nothing are left out (never allowed).
class VocabularyBytes {
 public:
  explicit VocabularyBytes(const text::Tokenizer& tokenizer);
  int64_t size() const { return static_cast<int64_t>(bytes_.size()); }
  const std::string& bytes(int64_t id) const { return bytes_[static_cast<size_t>(id)]; }
  // Token ids in byte order, and each one's common prefix length with the one before.
  const std::vector<int32_t>& sorted() const { return sorted_; }
  const std::vector<int32_t>& shared_prefix() const { return lcp_; }
  size_t longest() const { return longest_; }
  // Plain string text: tokens with no '"', '\\' or control byte, made of whole UTF-8
  // characters (inside a string they change nothing but its length), and their characters
  // (0 for the others); the other tokens, sorted as above, with their shared prefixes.
  int64_t plain_chars(int64_t id) const { return plain_chars_[static_cast<size_t>(id)]; }
  const std::vector<int32_t>& plain() const { return plain_; }
  const std::vector<int32_t>& others() const { return others_; }
  const std::vector<int32_t>& others_shared_prefix() const { return others_lcp_; }
  // Whether some token writes exactly this one byte.
  bool has_byte_token(uint8_t byte) const { return (single_[byte >> 6] >> (byte & 63)) & 1; }

 private:
  std::vector<std::string> bytes_;
  std::vector<int32_t> sorted_, lcp_, plain_, others_, others_lcp_;
  std::vector<int64_t> plain_chars_;
  size_t longest_ = 0;
  std::array<uint64_t, 4> single_{};
};

class JsonConstraint final : public TokenConstraint {
 public:
  // Throws flextron::Error naming `where` when the vocabulary lacks a one-byte token for a byte
  // the grammar may need (so the shortest completion could not always be written).
  JsonConstraint(std::shared_ptr<const VocabularyBytes> vocabulary,
                 std::shared_ptr<const JsonGrammar> grammar, const std::string& where);

  std::unique_ptr<TokenConstraint> clone() const override;
  bool allowed(int64_t tokens_after, std::vector<uint8_t>& allowed) override;
  void accept(int64_t token) override;

  // The fewest tokens that still complete the output (one byte each, at worst).
  int64_t min_tokens() const { return matcher_.min_to_complete(); }
  // Throws flextron::Error naming `where` when `max_tokens` new tokens cannot hold the shortest
  // valid output and the end token after it.
  void check_room(int64_t max_tokens, const std::string& where) const;
  const JsonMatcher& matcher() const { return matcher_; }

 private:
  std::shared_ptr<const VocabularyBytes> vocabulary_;
  JsonMatcher matcher_;
  // Marks the tokens of `order` (byte order, lcp its shared prefixes) that may come next.
  void scan(const std::vector<int32_t>& order, const std::vector<int32_t>& lcp,
            int64_t tokens_after, std::vector<uint8_t>& allowed);
  std::vector<JsonMatcher> prefix_states_;  // scratch: the state after each byte of a token
};

}  // namespace flextron::runtime
