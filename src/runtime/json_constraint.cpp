#include "runtime/json_constraint.h"

#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace flextron::runtime {

VocabularyBytes::VocabularyBytes(const text::Tokenizer& tokenizer) {
  const int64_t n = tokenizer.vocab_size();
  bytes_.resize(static_cast<size_t>(n));
  // A token's bytes after an ordinary token (decode_piece drops a leading space only after
  // BOS); any non-BOS predecessor will do.
  const int64_t prev = tokenizer.bos_id() == 0 ? std::min<int64_t>(1, n - 1) : 0;
  for (int64_t id = 0; id < n; ++id) {
    if (tokenizer.is_special(id)) continue;
    bytes_[static_cast<size_t>(id)] = tokenizer.decode_piece(prev, id);
  }
  for (int64_t id = 0; id < n; ++id) {
    const auto& b = bytes_[static_cast<size_t>(id)];
    if (b.empty()) continue;
    sorted_.push_back(static_cast<int32_t>(id));
    longest_ = std::max(longest_, b.size());
    if (b.size() == 1) {
      const auto c = static_cast<uint8_t>(b[0]);
      single_[c >> 6] |= uint64_t{1} << (c & 63);
    }
  }
  std::sort(sorted_.begin(), sorted_.end(), [&](int32_t a, int32_t b) {
    return bytes_[static_cast<size_t>(a)] < bytes_[static_cast<size_t>(b)];
  });
  auto shared_prefixes = [&](const std::vector<int32_t>& order) {
    std::vector<int32_t> lcp(order.size(), 0);
    for (size_t i = 1; i < order.size(); ++i) {
      const auto& a = bytes_[static_cast<size_t>(order[i - 1])];
      const auto& b = bytes_[static_cast<size_t>(order[i])];
      size_t k = 0;
      while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
      lcp[i] = static_cast<int32_t>(k);
    }
    return lcp;
  };
  lcp_ = shared_prefixes(sorted_);
  // Plain string text, told by the grammar itself: after '"' the token leaves a string that
  // needs only its closing quote, and it has no quote or escape of its own.
  const auto string_grammar = JsonGrammar::from_schema(nlohmann::json{{"type", "string"}}, "");
  plain_chars_.assign(bytes_.size(), 0);
  for (int32_t id : sorted_) {
    const auto& b = bytes_[static_cast<size_t>(id)];
    JsonMatcher m(string_grammar);
    const bool plain = b.find_first_of("\"\\") == std::string::npos && m.feed('"') && m.feed(b) &&
                       m.min_to_complete() == 1;
    if (!plain) {
      others_.push_back(id);
      continue;
    }
    plain_.push_back(id);
    for (char c : b)
      plain_chars_[static_cast<size_t>(id)] += (static_cast<uint8_t>(c) & 0xc0) != 0x80;
  }
  others_lcp_ = shared_prefixes(others_);
}

JsonConstraint::JsonConstraint(std::shared_ptr<const VocabularyBytes> vocabulary,
                               std::shared_ptr<const JsonGrammar> grammar, const std::string& where)
    : vocabulary_(std::move(vocabulary)), matcher_(grammar) {
  const auto needed = grammar->needed_bytes();
  for (int c = 0; c < 256; ++c) {
    const auto byte = static_cast<uint8_t>(c);
    if (((needed[byte >> 6] >> (byte & 63)) & 1) && !vocabulary_->has_byte_token(byte)) {
      const std::string shown = c >= 0x20 && c < 0x7f
                                    ? std::string("'") + static_cast<char>(c) + "'"
                                    : "byte " + std::to_string(c);
      fail(where, "the model's tokenizer has no token for " + shown +
                      " alone, which this output format may need; constrained output cannot "
                      "guarantee a complete value with this vocabulary");
    }
  }
}

void JsonConstraint::check_room(int64_t max_tokens, const std::string& where) const {
  const int64_t needed = min_tokens() + 1;
  if (needed > max_tokens)
    fail(where, std::to_string(max_tokens) +
                    " is too few for the output format: its shortest valid output takes " +
                    std::to_string(needed) + " tokens");
}

std::unique_ptr<TokenConstraint> JsonConstraint::clone() const {
  auto copy = std::make_unique<JsonConstraint>(*this);
  copy->prefix_states_.clear();
  return copy;
}

void JsonConstraint::scan(const std::vector<int32_t>& order, const std::vector<int32_t>& lcp,
                          int64_t tokens_after, std::vector<uint8_t>& allowed) {
  if (prefix_states_.size() < vocabulary_->longest() + 1)
    prefix_states_.assign(vocabulary_->longest() + 1, matcher_);
  prefix_states_[0] = matcher_;
  // prefix_states_[k] is the state after the first k bytes of the previous token, valid for
  // k <= valid; a token sharing more than `valid` bytes with it shares a prefix that failed.
  size_t valid = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const int32_t id = order[i];
    const std::string& b = vocabulary_->bytes(id);
    const size_t shared = i == 0 ? 0 : static_cast<size_t>(lcp[i]);
    if (shared > valid) continue;  // starts with the failed prefix
    size_t k = shared;
    for (; k < b.size(); ++k) {
      prefix_states_[k + 1] = prefix_states_[k];
      if (!prefix_states_[k + 1].feed(static_cast<uint8_t>(b[k]))) break;
    }
    valid = k;
    if (k == b.size() && id < static_cast<int32_t>(allowed.size()) &&
        prefix_states_[k].min_to_complete() <= tokens_after)
      allowed[static_cast<size_t>(id)] = 1;
  }
}

bool JsonConstraint::allowed(int64_t tokens_after, std::vector<uint8_t>& allowed) {
  std::fill(allowed.begin(), allowed.end(), 0);
  int64_t room = 0;
  if (matcher_.in_plain_string(room)) {
    // Inside a string most of the vocabulary fits; plain text tokens are decided by their
    // length alone, and only the rest go through the matcher.
    if (matcher_.min_to_complete() <= tokens_after)
      for (int32_t id : vocabulary_->plain())
        if (vocabulary_->plain_chars(id) <= room && id < static_cast<int32_t>(allowed.size()))
          allowed[static_cast<size_t>(id)] = 1;
    scan(vocabulary_->others(), vocabulary_->others_shared_prefix(), tokens_after, allowed);
  } else {
    scan(vocabulary_->sorted(), vocabulary_->shared_prefix(), tokens_after, allowed);
  }
  return matcher_.can_finish();
}

void JsonConstraint::accept(int64_t token) {
  if (token < 0 || token >= vocabulary_->size() || !matcher_.feed(vocabulary_->bytes(token)))
    fail("structured output", "token " + std::to_string(token) +
                                  " does not continue the JSON output (it was not allowed)");
}

}  // namespace flextron::runtime
