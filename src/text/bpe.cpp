#include "text/bpe.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "core/error.h"

namespace flextron::text {

namespace {

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

// Length of the UTF-8 character at s[i]; an invalid or cut sequence counts as one byte.
size_t char_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

constexpr int32_t kDead = INT32_MIN;

struct Candidate {
  double priority;
  int32_t left, right, left_id, right_id, result;
  // std::priority_queue keeps the largest on top: "larger" = worse priority, then further right.
  bool operator<(const Candidate& o) const {
    return priority != o.priority ? priority > o.priority : left > o.left;
  }
};

// Per-thread scratch, reused across words and calls (encode_word is const and thread-safe).
struct Scratch {
  std::vector<int32_t> symbols, prev, next;
  std::vector<Candidate> heap;
  std::string mapped;
};
thread_local Scratch scratch;

}  // namespace

const std::array<std::string, 256>& byte_level_symbols() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> out;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      out[static_cast<size_t>(b)] = utf8(printable ? static_cast<uint32_t>(b) : next++);
    }
    return out;
  }();
  return table;
}

bool byte_level_decode(std::string_view text, std::string* out) {
  static const std::unordered_map<std::string, char> inverse = [] {
    std::unordered_map<std::string, char> m;
    for (int b = 0; b < 256; ++b)
      m[byte_level_symbols()[static_cast<size_t>(b)]] = static_cast<char>(b);
    return m;
  }();
  std::string bytes;
  for (size_t i = 0; i < text.size();) {
    const size_t n = char_length(text, i);
    auto it = inverse.find(std::string(text.substr(i, n)));
    if (it == inverse.end()) return false;
    bytes += it->second;
    i += n;
  }
  *out += bytes;
  return true;
}

BpeModel::BpeModel(std::vector<std::string> pieces, const std::vector<Merge>& merges,
                   std::vector<float> scores, std::vector<bool> mergeable, BpeOptions options,
                   const std::string& where)
    : pieces_(std::move(pieces)),
      scores_(std::move(scores)),
      mergeable_(std::move(mergeable)),
      options_(std::move(options)) {
  ids_.reserve(pieces_.size());
  for (size_t i = 0; i < pieces_.size(); ++i)
    if (!pieces_[i].empty()) ids_.emplace(pieces_[i], static_cast<int32_t>(i));
  byte_ids_.fill(-1);
  fallback_ids_.fill(-1);
  all_fallback_ = true;
  for (int b = 0; b < 256; ++b) {
    byte_ids_[static_cast<size_t>(b)] =
        static_cast<int32_t>(id(byte_level_symbols()[static_cast<size_t>(b)]));
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    fallback_ids_[static_cast<size_t>(b)] = static_cast<int32_t>(id(name));
    all_fallback_ = all_fallback_ && fallback_ids_[static_cast<size_t>(b)] >= 0;
  }
  if (!options_.unk_token.empty()) {
    unk_ = static_cast<int32_t>(id(options_.unk_token));
    if (unk_ < 0) fail(where, "unk_token \"" + options_.unk_token + "\" is not in the vocabulary");
  }
  if (scores_.empty()) {
    pairs_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const auto& [a, b] = merges[i];
      const int64_t ia = id(a), ib = id(b), iab = id(a + b);
      const std::string& missing = ia < 0 ? a : ib < 0 ? b : a + b;
      if (ia < 0 || ib < 0 || iab < 0)
        fail(where, "merge " + std::to_string(i) + " (\"" + a + " " + b + "\"): \"" + missing +
                        "\" is not in the vocabulary");
      // A repeated pair keeps its last rank, as HF's map and GPT-2's encoder.py do.
      pairs_[key(static_cast<int32_t>(ia), static_cast<int32_t>(ib))] = {static_cast<double>(i),
                                                                         static_cast<int32_t>(iab)};
    }
    merges_ = merges;
    return;
  }
  if (!merges.empty()) fail(where, "a score-merged vocabulary takes no merge list");
  if (scores_.size() != pieces_.size() || mergeable_.size() != pieces_.size())
    fail(where, "scores / token types and pieces differ in length");
  for (size_t p = 0; p < pieces_.size(); ++p) {
    if (!mergeable_[p]) continue;
    const std::string& s = pieces_[p];
    for (size_t k = char_length(s, 0); k < s.size(); k += char_length(s, k)) {
      const int64_t l = id(std::string_view(s).substr(0, k)), r = id(std::string_view(s).substr(k));
      if (l >= 0 && r >= 0)
        pairs_[key(static_cast<int32_t>(l), static_cast<int32_t>(r))] = {-scores_[p],
                                                                         static_cast<int32_t>(p)};
    }
  }
}

int64_t BpeModel::id(std::string_view piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

float BpeModel::score(int64_t id) const {
  if (!scores_.empty()) return scores_.at(static_cast<size_t>(id));
  return 0.0f;
}

std::vector<BpeModel::Merge> BpeModel::merge_list() const {
  if (scores_.empty()) return merges_;
  struct Scored {
    float score;
    Merge merge;
  };
  std::vector<Scored> all;
  for (size_t p = 0; p < pieces_.size(); ++p) {
    if (!mergeable_[p]) continue;
    const std::string& s = pieces_[p];
    std::vector<std::pair<std::pair<int64_t, int64_t>, Merge>> local;
    for (size_t k = char_length(s, 0); k < s.size(); k += char_length(s, k)) {
      const int64_t l = id(std::string_view(s).substr(0, k)), r = id(std::string_view(s).substr(k));
      if (l >= 0 && r >= 0) local.push_back({{l, r}, {s.substr(0, k), s.substr(k)}});
    }
    std::sort(local.begin(), local.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    for (auto& e : local) all.push_back({scores_[p], std::move(e.second)});
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const Scored& x, const Scored& y) { return x.score > y.score; });
  std::vector<Merge> out;
  out.reserve(all.size());
  for (auto& s : all) out.push_back(std::move(s.merge));
  return out;
}

void BpeModel::add_unknown(std::string_view chars, std::vector<int32_t>* symbols,
                           bool* last_unk) const {
  if (options_.byte_fallback) {
    bool all = true;
    for (unsigned char b : chars) all = all && fallback_ids_[b] >= 0;
    if (all) {
      for (unsigned char b : chars) symbols->push_back(fallback_ids_[b]);
      *last_unk = false;
      return;
    }
  }
  if (unk_ < 0) return;  // HF drops an unknown character when the model has no unk token
  if (!(options_.fuse_unk && *last_unk)) symbols->push_back(unk_);
  *last_unk = true;
}

void BpeModel::encode_word(std::string_view word, std::vector<int64_t>* ids) const {
  if (word.empty()) return;
  Scratch& s = scratch;
  if (options_.ignore_merges) {
    std::string_view whole = word;
    if (options_.byte_level) {
      s.mapped.clear();
      for (unsigned char b : word) s.mapped += byte_level_symbols()[b];
      whole = s.mapped;
    }
    const int64_t found = id(whole);
    if (found >= 0) {
      ids->push_back(found);
      return;
    }
  }
  auto& sym = s.symbols;
  sym.clear();
  bool last_unk = false;
  if (options_.byte_level) {
    for (size_t i = 0; i < word.size(); ++i) {
      const int32_t b = byte_ids_[static_cast<unsigned char>(word[i])];
      if (b >= 0) {
        sym.push_back(b);
        last_unk = false;
      } else {
        add_unknown(word.substr(i, 1), &sym, &last_unk);
      }
    }
  } else {
    for (size_t i = 0; i < word.size();) {
      const size_t n = char_length(word, i);
      const int64_t c = id(word.substr(i, n));
      if (c >= 0) {
        sym.push_back(static_cast<int32_t>(c));
        last_unk = false;
      } else {
        add_unknown(word.substr(i, n), &sym, &last_unk);
      }
      i += n;
    }
  }
  const auto n = static_cast<int32_t>(sym.size());
  if (n >= 2 && !pairs_.empty()) {
    auto& prev = s.prev;
    auto& next = s.next;
    prev.resize(static_cast<size_t>(n));
    next.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
    auto& heap = s.heap;
    heap.clear();
    auto consider = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      auto it = pairs_.find(key(sym[l], sym[r]));
      if (it == pairs_.end()) return;
      heap.push_back({it->second.priority, l, r, sym[l], sym[r], it->second.result});
      std::push_heap(heap.begin(), heap.end());
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end());
      const Candidate c = heap.back();
      heap.pop_back();
      // Stale: one side merged elsewhere since this pair was queued.
      if (sym[c.left] != c.left_id || next[c.left] != c.right || sym[c.right] != c.right_id)
        continue;
      sym[c.left] = c.result;
      sym[c.right] = kDead;
      next[c.left] = next[c.right];
      if (next[c.left] >= 0) prev[next[c.left]] = c.left;
      consider(prev[c.left], c.left);
      consider(c.left, next[c.left]);
    }
    for (int32_t i = 0; i >= 0; i = next[i]) ids->push_back(sym[i]);
    return;
  }
  for (int32_t id : sym) ids->push_back(id);
}

}  // namespace flextron::text
