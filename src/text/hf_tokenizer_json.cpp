// HuggingFace tokenizer.json pipelines on the BPE engine (see hf_tokenizer.h). The semantics
// follow HF `tokenizers`: added tokens are split out of the raw text first (those with
// normalized=false) and again after normalization (normalized=true); pre-tokenizers split each
// piece further (Split's behaviors act on the list of matches and gaps); the model encodes
// each piece; decoders run per token so that decode_piece can stream.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <mutex>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "text/bpe.h"
#include "text/hf_tokenizer.h"
#include "text/utf8.h"

namespace flextron::text {

using nlohmann::json;

namespace {

const std::string kMetaspace = "\xE2\x96\x81";  // U+2581

// A compiled PCRE2 pattern (UTF, Unicode properties, invalid UTF-8 tolerated), JIT when it can.
class Regex {
 public:
  Regex() = default;
  Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      fail(where, "cannot compile the regex \"" + pattern + "\" at offset " +
                      std::to_string(offset) + ": " + reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if it fails
    code_.reset(code, pcre2_code_free);
  }
  explicit operator bool() const { return code_ != nullptr; }
  const std::string& pattern() const { return pattern_; }

  // Every match, left to right (empty matches skipped), as (start, end) byte offsets.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>* out) const {
    thread_local std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create(32, nullptr), &pcre2_match_data_free);
    out->clear();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
    size_t at = 0;
    while (at < s.size()) {
      const int rc = pcre2_match(code_.get(), subject, s.size(), at, 0, match.get(), nullptr);
      if (rc < 0) break;  // no match (or an error: the rest stays one gap)
      const auto* ov = pcre2_get_ovector_pointer(match.get());
      if (ov[1] > ov[0]) {
        out->emplace_back(ov[0], ov[1]);
        at = ov[1];
      } else {
        at = ov[0] + 1;
        while (at < s.size() && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) ++at;
      }
    }
  }

 private:
  std::string pattern_;
  std::shared_ptr<pcre2_code> code_;
};

std::string quote_regex(const std::string& literal) {
  std::string out = "\\Q";
  for (size_t at = 0;;) {  // \Q...\E cannot hold "\E" itself
    const size_t e = literal.find("\\E", at);
    out += literal.substr(at, e == std::string::npos ? std::string::npos : e - at);
    if (e == std::string::npos) break;
    out += "\\E\\\\E\\Q";
    at = e + 2;
  }
  return out + "\\E";
}

void replace_all(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size()))
    s->replace(at, from.size(), to);
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// A field of a component, or its default when absent/null.
template <typename T>
T field(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<T>();
}

// A {"String": s} or {"Regex": r} pattern as a regex.
Regex pattern_regex(const json& p, const std::string& where, const std::string& what) {
  if (p.is_object() && p.contains("Regex")) return Regex(p["Regex"].get<std::string>(), where);
  if (p.is_object() && p.contains("String"))
    return Regex(quote_regex(p["String"].get<std::string>()), where);
  if (p.is_string()) return Regex(quote_regex(p.get<std::string>()), where);
  fail(where, what + ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

// --- normalizers -------------------------------------------------------------------------------

struct Normalizer {
  enum class Kind { Prepend, Replace, Unicode, Lowercase, Strip } kind;
  std::string text;  // Prepend: what; Replace: content
  Regex regex;       // Replace
  const icu::Normalizer2* unicode = nullptr;
  bool left = false, right = false;  // Strip
};

void unicode_text(std::string* s, const std::function<void(icu::UnicodeString&)>& f,
                  const std::string& where) {
  if (find_invalid_utf8(*s)) fail(where, "the normalizer needs valid UTF-8 input");
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(*s);
  f(u);
  s->clear();
  u.toUTF8String(*s);
}

void add_normalizers(const json& j, const std::string& where, std::vector<Normalizer>* out) {
  if (j.is_null()) return;
  const auto type = field<std::string>(j, "type", "");
  if (type == "Sequence") {
    for (const auto& n : j.at("normalizers")) add_normalizers(n, where, out);
  } else if (type == "Prepend") {
    out->push_back({Normalizer::Kind::Prepend, j.at("prepend").get<std::string>(), {}});
  } else if (type == "Replace") {
    out->push_back({Normalizer::Kind::Replace, j.at("content").get<std::string>(),
                    pattern_regex(j.at("pattern"), where, "normalizer Replace")});
  } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = type == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                                : type == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                                : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                                 : icu::Normalizer2::getNFKDInstance(status);
    if (U_FAILURE(status)) fail(where, "normalizer " + type + ": ICU has no such normalizer");
    Normalizer norm{Normalizer::Kind::Unicode, type, {}};
    norm.unicode = n;
    out->push_back(norm);
  } else if (type == "Lowercase") {
    out->push_back({Normalizer::Kind::Lowercase, "", {}});
  } else if (type == "Strip") {
    Normalizer norm{Normalizer::Kind::Strip, "", {}};
    norm.left = field(j, "strip_left", true);
    norm.right = field(j, "strip_right", true);
    out->push_back(norm);
  } else {
    fail(where, "normalizer type \"" + type +
                    "\" is not supported (Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, "
                    "Lowercase, Strip)");
  }
}

void normalize(const std::vector<Normalizer>& normalizers, std::string* s,
               const std::string& where) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& n : normalizers) {
    switch (n.kind) {
      case Normalizer::Kind::Prepend:
        if (!s->empty()) s->insert(0, n.text);
        break;
      case Normalizer::Kind::Replace: {
        n.regex.find_all(*s, &matches);
        if (matches.empty()) break;
        std::string out;
        size_t at = 0;
        for (auto [b, e] : matches) out.append(*s, at, b - at).append(n.text), at = e;
        out.append(*s, at, std::string::npos);
        *s = std::move(out);
        break;
      }
      case Normalizer::Kind::Unicode:
        if (is_ascii(*s)) break;  // ASCII is invariant under every normal form
        unicode_text(
            s,
            [&](icu::UnicodeString& u) {
              UErrorCode status = U_ZERO_ERROR;
              u = n.unicode->normalize(u, status);
              if (U_FAILURE(status)) fail(where, "Unicode normalization failed");
            },
            where);
        break;
      case Normalizer::Kind::Lowercase:
        if (is_ascii(*s)) {
          for (char& c : *s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else {
          unicode_text(
              s, [](icu::UnicodeString& u) { u.toLower(icu::Locale::getRoot()); }, where);
        }
        break;
      case Normalizer::Kind::Strip: {
        auto space = [](char c) {
          return c == ' ' || c == '\t' || c == '\n' || c == '\r';
        };
        size_t b = 0, e = s->size();
        if (n.left)
          while (b < e && space((*s)[b])) ++b;
        if (n.right)
          while (e > b && space((*s)[e - 1])) --e;
        *s = s->substr(b, e - b);
        break;
      }
    }
  }
}

// --- pre-tokenizers ----------------------------------------------------------------------------

enum class Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& b, const std::string& where) {
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "Removed") return Behavior::Removed;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail(where, "Split behavior \"" + b +
                  "\" is not one of Isolated, Removed, MergedWithPrevious, "
                  "MergedWithNext, Contiguous");
}

struct Piece {
  std::string text;
  bool at_start;  // begins the original text (Metaspace's prepend_scheme "first")
};

struct PreTokenizer {
  enum class Kind { Split, ByteLevel, Metaspace } kind = Kind::Split;
  Regex regex;  // Split; ByteLevel with use_regex
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  bool map_bytes = true;          // ByteLevel: false when the model maps (it is the last step)
  std::string replacement;        // Metaspace
  enum class Prepend { Always, First, Never } prepend = Prepend::Always;
  bool split = true;  // Metaspace
};

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void add_pre_tokenizers(const json& j, const std::string& where, std::vector<PreTokenizer>* out) {
  if (j.is_null()) return;
  const auto type = field<std::string>(j, "type", "");
  PreTokenizer p;
  p.kind = PreTokenizer::Kind::Split;
  if (type == "Sequence") {
    for (const auto& e : j.at("pretokenizers")) add_pre_tokenizers(e, where, out);
    return;
  } else if (type == "Split") {
    p.regex = pattern_regex(j.at("pattern"), where, "pre_tokenizer Split");
    p.behavior = parse_behavior(j.at("behavior").get<std::string>(), where);
    p.invert = field(j, "invert", false);
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::ByteLevel;
    p.add_prefix_space = field(j, "add_prefix_space", true);
    if (field(j, "use_regex", true)) p.regex = Regex(kGpt2Pattern, where);
  } else if (type == "Metaspace") {
    p.kind = PreTokenizer::Kind::Metaspace;
    p.replacement = field<std::string>(j, "replacement", kMetaspace);
    p.split = field(j, "split", true);
    std::string scheme = field<std::string>(j, "prepend_scheme", "");
    if (scheme.empty()) scheme = field(j, "add_prefix_space", true) ? "always" : "never";
    if (scheme == "always")
      p.prepend = PreTokenizer::Prepend::Always;
    else if (scheme == "first")
      p.prepend = PreTokenizer::Prepend::First;
    else if (scheme == "never")
      p.prepend = PreTokenizer::Prepend::Never;
    else
      fail(where, "Metaspace prepend_scheme \"" + scheme + "\" is not always, first or never");
  } else if (type == "Digits") {
    p.regex = Regex(field(j, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)", where);
  } else if (type == "Punctuation") {
    // HF: ASCII punctuation or a Unicode P* character, one at a time.
    p.regex = Regex(R"([\p{P}!-/:-@\[-`{-~])", where);
    p.behavior = parse_behavior(field<std::string>(j, "behavior", "Isolated"), where);
  } else if (type == "Whitespace") {
    p.regex = Regex(R"(\w+|[^\w\s]+)", where);
    p.behavior = Behavior::Removed;
    p.invert = true;
  } else if (type == "WhitespaceSplit") {
    p.regex = Regex(R"(\s+)", where);
    p.behavior = Behavior::Removed;
  } else {
    fail(where, "pre_tokenizer type \"" + type +
                    "\" is not supported (Sequence, ByteLevel, Split, Metaspace, Digits, "
                    "Punctuation, Whitespace, WhitespaceSplit)");
  }
  out->push_back(std::move(p));
}

// HF's split by matches: the (start, end, is_match) list covering `s`, then the behavior.
void split_piece(const Piece& piece, const Regex& regex, Behavior behavior, bool invert,
                 std::vector<Piece>* out) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  const std::string& s = piece.text;
  regex.find_all(s, &matches);
  struct Span {
    size_t b, e;
    bool match;
  };
  thread_local std::vector<Span> spans;
  spans.clear();
  size_t at = 0;
  for (auto [b, e] : matches) {
    if (b > at) spans.push_back({at, b, invert});
    spans.push_back({b, e, !invert});
    at = e;
  }
  if (at < s.size()) spans.push_back({at, s.size(), invert});
  thread_local std::vector<Span> kept;
  kept.clear();
  switch (behavior) {
    case Behavior::Isolated:
      kept = spans;
      break;
    case Behavior::Removed:
      for (const auto& sp : spans)
        if (!sp.match) kept.push_back(sp);
      break;
    case Behavior::Contiguous: {
      bool prev = false;
      for (const auto& sp : spans) {
        if (!kept.empty() && sp.match == prev)
          kept.back().e = sp.e;
        else
          kept.push_back(sp);
        prev = sp.match;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev = false;
      for (const auto& sp : spans) {
        if (!kept.empty() && sp.match && !prev)
          kept.back().e = sp.e;
        else
          kept.push_back(sp);
        prev = sp.match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (!kept.empty() && it->match && !prev)
          kept.back().b = it->b;
        else
          kept.push_back(*it);
        prev = it->match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const auto& sp : kept)
    if (sp.e > sp.b) out->push_back({s.substr(sp.b, sp.e - sp.b), piece.at_start && sp.b == 0});
}

void map_bytes(std::string* s) {
  std::string out;
  out.reserve(s->size() * 2);
  for (unsigned char b : *s) out += byte_level_symbols()[b];
  *s = std::move(out);
}

void pre_tokenize(const std::vector<PreTokenizer>& steps, std::vector<Piece>* pieces) {
  thread_local std::vector<Piece> next;
  for (const auto& step : steps) {
    next.clear();
    for (auto& piece : *pieces) {
      switch (step.kind) {
        case PreTokenizer::Kind::Split:
          split_piece(piece, step.regex, step.behavior, step.invert, &next);
          break;
        case PreTokenizer::Kind::ByteLevel: {
          if (step.add_prefix_space && piece.text.rfind(' ', 0) != 0) piece.text.insert(0, " ");
          const size_t first = next.size();
          if (step.regex)
            split_piece(piece, step.regex, Behavior::Isolated, false, &next);
          else
            next.push_back(std::move(piece));
          if (step.map_bytes)
            for (size_t i = first; i < next.size(); ++i) map_bytes(&next[i].text);
          break;
        }
        case PreTokenizer::Kind::Metaspace: {
          replace_all(&piece.text, " ", step.replacement);
          const bool starts = piece.text.rfind(step.replacement, 0) == 0;
          if (!starts && (step.prepend == PreTokenizer::Prepend::Always ||
                          (step.prepend == PreTokenizer::Prepend::First && piece.at_start)))
            piece.text.insert(0, step.replacement);
          if (!step.split) {
            next.push_back(std::move(piece));
            break;
          }
          // MergedWithNext on the replacement: every piece starts at one.
          size_t b = 0;
          for (size_t at = piece.text.find(step.replacement, 1); at != std::string::npos;
               at = piece.text.find(step.replacement, at + 1)) {
            next.push_back({piece.text.substr(b, at - b), piece.at_start && b == 0});
            b = at;
          }
          next.push_back({piece.text.substr(b), piece.at_start && b == 0});
          break;
        }
      }
    }
    pieces->swap(next);
  }
}

// --- decoders ----------------------------------------------------------------------------------

struct Decoder {
  enum class Kind { Replace, ByteFallback, Strip, Metaspace, ByteLevel } kind = Kind::Replace;
  Regex regex;          // Replace
  std::string content;  // Replace: the replacement; Strip: the character; Metaspace: replacement
  size_t start = 0, stop = 0;
  bool first_only = false;  // Strip after Fuse: the fused text's start is the first token's
  bool prepend = true;      // Metaspace
};

void add_decoders(const json& j, const std::string& where, bool* fused, std::vector<Decoder>* out) {
  if (j.is_null()) return;
  const auto type = field<std::string>(j, "type", "");
  Decoder d;
  d.kind = Decoder::Kind::Replace;
  if (type == "Sequence") {
    for (const auto& e : j.at("decoders")) add_decoders(e, where, fused, out);
    return;
  } else if (type == "Fuse") {
    *fused = true;  // streaming concatenates anyway
    return;
  } else if (type == "Replace") {
    d.regex = pattern_regex(j.at("pattern"), where, "decoder Replace");
    d.content = j.at("content").get<std::string>();
  } else if (type == "ByteFallback") {
    d.kind = Decoder::Kind::ByteFallback;
  } else if (type == "Strip") {
    d.kind = Decoder::Kind::Strip;
    d.content = j.at("content").get<std::string>();
    d.start = field<size_t>(j, "start", 0);
    d.stop = field<size_t>(j, "stop", 0);
    d.first_only = *fused;
    if (*fused && d.stop > 0)
      fail(where, "decoder Strip with stop > 0 after Fuse cannot stream (the end is unknown)");
  } else if (type == "Metaspace") {
    d.kind = Decoder::Kind::Metaspace;
    d.content = field<std::string>(j, "replacement", kMetaspace);
    const auto scheme = field<std::string>(j, "prepend_scheme", "");
    d.prepend = scheme.empty() ? field(j, "add_prefix_space", true) : scheme != "never";
  } else if (type == "ByteLevel") {
    d.kind = Decoder::Kind::ByteLevel;
  } else {
    fail(where, "decoder type \"" + type +
                    "\" is not supported (Sequence, ByteLevel, Replace, ByteFallback, Fuse, "
                    "Strip, Metaspace)");
  }
  out->push_back(std::move(d));
}

bool byte_piece(const std::string& s, char* byte) {
  if (s.size() != 6 || s.compare(0, 3, "<0x") != 0 || s[5] != '>' ||
      !std::isxdigit(static_cast<unsigned char>(s[3])) ||
      !std::isxdigit(static_cast<unsigned char>(s[4])))
    return false;
  *byte = static_cast<char>(std::stoi(s.substr(3, 2), nullptr, 16));
  return true;
}

struct AddedToken {
  std::string content;
  int64_t id;
  bool special, lstrip, rstrip, normalized, single_word;
};

struct Segment {
  std::string text;
  int64_t token;  // an added token's id, or -1 for text
  bool at_start;
};

bool word_char(unsigned char c) {
  return std::isalnum(c) || c == '_' || c >= 0x80;
}

// Added tokens by their first byte: the candidates at a position.
using AddedIndex = std::array<std::vector<const AddedToken*>, 256>;

// Splits `text` around the added tokens in `index` (leftmost, then longest), absorbing the
// whitespace their lstrip / rstrip ask for.
void split_added(std::string&& text, bool at_start, const AddedIndex& index, bool any,
                 std::vector<Segment>* out) {
  if (!any) {
    out->push_back({std::move(text), -1, at_start});
    return;
  }
  size_t begin = 0, at = 0;
  auto space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
  };
  while (at < text.size()) {
    const AddedToken* best = nullptr;
    for (const AddedToken* t : index[static_cast<unsigned char>(text[at])]) {
      if (t->content.size() > text.size() - at ||
          (best && t->content.size() <= best->content.size()))
        continue;
      if (text.compare(at, t->content.size(), t->content) != 0) continue;
      const size_t end = at + t->content.size();
      if (t->single_word &&
          ((at > 0 && word_char(text[at - 1])) || (end < text.size() && word_char(text[end]))))
        continue;
      best = t;
    }
    if (best == nullptr) {
      ++at;
      continue;
    }
    size_t b = at, e = at + best->content.size();
    if (best->lstrip)
      while (b > begin && space(text[b - 1])) --b;
    if (best->rstrip)
      while (e < text.size() && space(text[e])) ++e;
    if (b > begin) out->push_back({text.substr(begin, b - begin), -1, at_start && begin == 0});
    out->push_back({"", best->id, false});
    begin = at = e;
  }
  if (begin < text.size()) out->push_back({text.substr(begin), -1, at_start && begin == 0});
}

std::string token_content(const json& t) {
  if (t.is_string()) return t.get<std::string>();
  if (t.is_object() && t.contains("content")) return t["content"].get<std::string>();
  return "";
}

}  // namespace

struct HfTokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  AddedIndex raw_index, normalized_index;  // matched before / after normalization
  bool any_raw = false, any_normalized = false;
  std::once_flag derived_once;  // score() of a rank-merged vocabulary
  std::vector<float> derived_scores;
  std::vector<bool> special, added_id;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre;
  std::vector<Decoder> decoders;
  std::vector<int64_t> prefix, suffix;  // what add_bos puts around the text
  std::string where;
};

HfTokenizer::~HfTokenizer() = default;

HfTokenizer::HfTokenizer(HfSource source)
    : impl_(std::make_unique<Impl>()), source_(std::move(source)) {
  Impl& m = *impl_;
  const json& j = source_.tokenizer;
  const std::string& where = source_.where;
  m.where = where;
  kind_ = source_.kind;
  if (!j.is_object()) fail(where, "expected a JSON object");
  try {
    const json& model = j.at("model");
    const auto type = field<std::string>(model, "type", model.contains("merges") ? "BPE" : "");
    if (type != "BPE") fail(where, "model type \"" + type + "\" is not supported (only BPE)");
    if (field(model, "dropout", 0.0) != 0.0)
      fail(where, "model.dropout is not supported (tokenization would be random)");
    if (!field<std::string>(model, "continuing_subword_prefix", "").empty() ||
        !field<std::string>(model, "end_of_word_suffix", "").empty())
      fail(where, "model: continuing_subword_prefix / end_of_word_suffix are not supported");
    const json& vocab = model.at("vocab");
    if (!vocab.is_object()) fail(where, "model.vocab must be an object of piece -> id");
    int64_t size = 0;
    for (const auto& [piece, id] : vocab.items()) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0)
        fail(where, "model.vocab: \"" + piece + "\" has no non-negative integer id");
      size = std::max(size, id.get<int64_t>() + 1);
    }
    std::vector<std::string> model_pieces(static_cast<size_t>(size));
    for (const auto& [piece, id] : vocab.items()) {
      auto& slot = model_pieces[id.get<size_t>()];
      if (!slot.empty()) fail(where, "model.vocab: id " + id.dump() + " is used twice");
      slot = piece;
    }
    std::vector<BpeModel::Merge> merges;
    if (source_.scores.empty()) {
      const json& list = model.at("merges");
      for (size_t i = 0; i < list.size(); ++i) {
        const json& e = list[i];
        if (e.is_string()) {
          const auto s = e.get<std::string>();
          const auto space = s.find(' ');
          if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
            fail(where, "merge " + std::to_string(i) + " (\"" + s +
                            "\") is not two symbols separated by one space");
          merges.emplace_back(s.substr(0, space), s.substr(space + 1));
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
          merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        } else {
          fail(where, "merge " + std::to_string(i) + " is neither \"a b\" nor [\"a\", \"b\"]");
        }
      }
    }
    BpeOptions options;
    options.byte_fallback = field(model, "byte_fallback", false);
    options.ignore_merges = field(model, "ignore_merges", false);
    options.fuse_unk = field(model, "fuse_unk", false);
    options.unk_token = field<std::string>(model, "unk_token", "");

    add_normalizers(field(j, "normalizer", json()), where, &m.normalizers);
    add_pre_tokenizers(field(j, "pre_tokenizer", json()), where, &m.pre);
    // The last ByteLevel step's mapping is the model's (no string rebuilt per piece).
    if (!m.pre.empty() && m.pre.back().kind == PreTokenizer::Kind::ByteLevel) {
      m.pre.back().map_bytes = false;
      options.byte_level = true;
    }
    bool fused = false;
    add_decoders(field(j, "decoder", json()), where, &fused, &m.decoders);
    byte_level_ = std::any_of(m.pre.begin(), m.pre.end(), [](const PreTokenizer& p) {
      return p.kind == PreTokenizer::Kind::ByteLevel;
    });

    for (const auto& t : field(j, "added_tokens", json::array())) {
      AddedToken a{
          t.at("content").get<std::string>(), t.at("id").get<int64_t>(),
          field(t, "special", false),         field(t, "lstrip", false),
          field(t, "rstrip", false),          field(t, "normalized", !field(t, "special", false)),
          field(t, "single_word", false)};
      if (a.id < 0) fail(where, "added token \"" + a.content + "\" has a negative id");
      size = std::max(size, a.id + 1);
      m.added.push_back(a);
    }
    pieces_ = model_pieces;
    pieces_.resize(static_cast<size_t>(size));
    m.special.assign(static_cast<size_t>(size), false);
    m.added_id.assign(static_cast<size_t>(size), false);
    for (const auto& a : m.added) {
      m.added_id[static_cast<size_t>(a.id)] = true;
      if (pieces_[static_cast<size_t>(a.id)].empty())
        pieces_[static_cast<size_t>(a.id)] = a.content;
      if (a.special) m.special[static_cast<size_t>(a.id)] = true;
    }
    for (const auto& a : m.added) {
      if (a.content.empty()) continue;
      (a.normalized ? m.normalized_index : m.raw_index)[static_cast<unsigned char>(a.content[0])]
          .push_back(&a);
      (a.normalized ? m.any_normalized : m.any_raw) = true;
    }
    std::vector<float> scores = source_.scores;
    std::vector<bool> mergeable = source_.mergeable;
    if (!scores.empty()) {
      scores.resize(model_pieces.size());
      mergeable.resize(model_pieces.size());
    }
    m.model = std::make_unique<BpeModel>(std::move(model_pieces), merges, std::move(scores),
                                         std::move(mergeable), options, where);

    auto token_id = [&](const std::string& content) -> int64_t {
      for (const auto& a : m.added)
        if (a.content == content) return a.id;
      return m.model->id(content);
    };
    // Post-processor: the special tokens around $A of the single-sequence template.
    bool have_template = false;
    std::function<void(const json&)> post = [&](const json& p) {
      if (p.is_null()) return;
      const auto ptype = field<std::string>(p, "type", "");
      if (ptype == "Sequence") {
        for (const auto& e : p.at("processors")) post(e);
      } else if (ptype == "TemplateProcessing") {
        have_template = true;
        bool after = false;
        for (const auto& item : p.at("single")) {
          if (item.contains("Sequence")) {
            after = true;
            continue;
          }
          const auto name = item.at("SpecialToken").at("id").get<std::string>();
          const json& st = p.at("special_tokens");
          if (!st.contains(name))
            fail(where, "post_processor: special token \"" + name + "\" is not in special_tokens");
          for (const auto& id : st[name].at("ids"))
            (after ? m.suffix : m.prefix).push_back(id.get<int64_t>());
        }
      } else if (ptype == "RobertaProcessing" || ptype == "BertProcessing") {
        have_template = true;
        m.prefix.push_back(p.at("cls").at(1).get<int64_t>());
        m.suffix.push_back(p.at("sep").at(1).get<int64_t>());
      } else if (ptype != "ByteLevel") {
        fail(where, "post_processor type \"" + ptype +
                        "\" is not supported (TemplateProcessing, ByteLevel, Sequence, "
                        "RobertaProcessing, BertProcessing)");
      }
    };
    post(field(j, "post_processor", json()));

    const json& c = source_.config.is_object() ? source_.config : json::object();
    const json& g = source_.generation.is_object() ? source_.generation : json::object();
    auto config_id = [&](const char* key) -> int64_t {
      const std::string content = token_content(field(c, key, json()));
      if (content.empty()) return -1;
      const int64_t id = token_id(content);
      if (id < 0)
        fail(where, std::string("tokenizer_config.json: ") + key + " \"" + content +
                        "\" is not in the vocabulary");
      return id;
    };
    bos_ = config_id("bos_token");
    eos_ = config_id("eos_token");
    if (bos_ < 0 && !m.prefix.empty()) bos_ = m.prefix.front();
    if (bos_ < 0 && g.contains("bos_token_id") && g["bos_token_id"].is_number_integer())
      bos_ = g["bos_token_id"].get<int64_t>();
    if (g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      const json& e = g["eos_token_id"];
      if (e.is_array()) {
        for (const auto& v : e) eos_ids_.push_back(v.get<int64_t>());
      } else {
        eos_ids_.push_back(e.get<int64_t>());
      }
    }
    if (eos_ < 0 && !eos_ids_.empty()) eos_ = eos_ids_.front();
    if (eos_ < 0 && !m.suffix.empty()) eos_ = m.suffix.back();
    if (c.contains("add_bos_token") || c.contains("add_eos_token")) {
      // transformers rebuilds the template from these flags (LlamaTokenizerFast and kin).
      m.prefix.clear();
      m.suffix.clear();
      if (field(c, "add_bos_token", false) && bos_ >= 0) m.prefix.push_back(bos_);
      if (field(c, "add_eos_token", false) && eos_ >= 0) m.suffix.push_back(eos_);
    } else if (!have_template && bos_ >= 0) {
      m.prefix.push_back(bos_);
    }
    for (int64_t id : {bos_, eos_})
      if (id >= vocab_size())
        fail(where, "special token id " + std::to_string(id) + " is outside the vocabulary");
    const json& tmpl = field(c, "chat_template", json());
    if (tmpl.is_string()) {
      chat_template_ = tmpl.get<std::string>();
    } else if (tmpl.is_array()) {  // [{"name": ..., "template": ...}]: the default one
      for (const auto& t : tmpl)
        if (chat_template_.empty() || field<std::string>(t, "name", "") == "default")
          chat_template_ = field<std::string>(t, "template", "");
    }
    gguf_pre_ = detect_gguf_pre();
  } catch (const json::exception& e) {
    fail(where, std::string("malformed tokenizer: ") + e.what());
  }
}

std::string HfTokenizer::detect_gguf_pre() const {
  if (!byte_level_) return "";
  const auto& pre = impl_->pre;
  // ByteLevel(use_regex) alone is GPT-2's pattern; otherwise Splits (Isolated) then a bare
  // ByteLevel match a llama.cpp list exactly.
  if (pre.size() == 1 && pre[0].kind == PreTokenizer::Kind::ByteLevel && pre[0].regex &&
      !pre[0].add_prefix_space)
    return "gpt-2";
  std::vector<std::string> regexes;
  for (size_t i = 0; i < pre.size(); ++i) {
    const auto& p = pre[i];
    if (i + 1 == pre.size()) {
      if (p.kind != PreTokenizer::Kind::ByteLevel || p.regex || p.add_prefix_space) return "";
    } else if (p.kind != PreTokenizer::Kind::Split || p.behavior != Behavior::Isolated ||
               p.invert) {
      return "";
    } else {
      regexes.push_back(p.regex.pattern());
    }
  }
  for (const char* name : {"gpt-2", "llama-bpe", "qwen2", "falcon", "mpt", "starcoder", "refact",
                           "deepseek-llm", "deepseek-coder"}) {
    if (llama_cpp_pre_regexes(name, "") == regexes) return name;
  }
  // Llama-3's tokenizer.json has the original case-insensitive group.
  if (regexes.size() == 1 &&
      regexes[0] ==
          R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)")
    return "llama-bpe";
  return "";
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text, bool add_bos) const {
  const Impl& m = *impl_;
  std::vector<int64_t> ids;
  if (add_bos) ids = m.prefix;
  std::vector<Segment> raw, normalized;
  split_added(std::string(text), true, m.raw_index, m.any_raw, &raw);
  std::vector<Piece> pieces;
  for (auto& seg : raw) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    normalize(m.normalizers, &seg.text, m.where);
    normalized.clear();
    split_added(std::move(seg.text), seg.at_start, m.normalized_index, m.any_normalized,
                &normalized);
    for (auto& part : normalized) {
      if (part.token >= 0) {
        ids.push_back(part.token);
        continue;
      }
      pieces.clear();
      pieces.push_back({std::move(part.text), part.at_start});
      pre_tokenize(m.pre, &pieces);
      for (const auto& p : pieces) m.model->encode_word(p.text, &ids);
    }
  }
  if (add_bos) ids.insert(ids.end(), m.suffix.begin(), m.suffix.end());
  return ids;
}

std::string HfTokenizer::decode_piece(int64_t prev, int64_t token) const {
  const Impl& m = *impl_;
  if (token < 0 || token >= vocab_size())
    fail(m.where, "token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                      std::to_string(vocab_size()) + ")");
  if (is_special(token)) return "";
  // An added token is its text (llama.cpp and transformers do not run it through the decoders).
  if (m.added_id[static_cast<size_t>(token)]) return pieces_[static_cast<size_t>(token)];
  const bool first = prev < 0 || prev == bos_;
  std::string s = pieces_[static_cast<size_t>(token)];
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& d : m.decoders) {
    switch (d.kind) {
      case Decoder::Kind::Replace: {
        d.regex.find_all(s, &matches);
        std::string out;
        size_t at = 0;
        for (auto [b, e] : matches) out.append(s, at, b - at).append(d.content), at = e;
        s = out.append(s, at, std::string::npos);
        break;
      }
      case Decoder::Kind::ByteFallback: {
        char byte;
        if (byte_piece(s, &byte)) s = std::string(1, byte);
        break;
      }
      case Decoder::Kind::Strip: {
        if (d.first_only && !first) break;
        size_t b = 0, e = s.size();
        for (size_t k = 0; k < d.start && b < e && s.compare(b, d.content.size(), d.content) == 0;
             ++k)
          b += d.content.size();
        for (size_t k = 0; k < d.stop && e >= b + d.content.size() &&
                           s.compare(e - d.content.size(), d.content.size(), d.content) == 0;
             ++k)
          e -= d.content.size();
        s = s.substr(b, e - b);
        break;
      }
      case Decoder::Kind::Metaspace:
        replace_all(&s, d.content, " ");
        if (first && d.prepend && !s.empty() && s[0] == ' ') s.erase(0, 1);
        break;
      case Decoder::Kind::ByteLevel: {
        std::string bytes;
        if (byte_level_decode(s, &bytes)) s = std::move(bytes);
        break;
      }
    }
  }
  return s;
}

std::vector<int64_t> HfTokenizer::eos_ids() const {
  if (!eos_ids_.empty()) return eos_ids_;
  return {eos_};
}

bool HfTokenizer::is_special(int64_t id) const {
  if (id == bos_ || id == eos_) return true;
  return id >= 0 && id < vocab_size() && impl_->special[static_cast<size_t>(id)];
}

std::string HfTokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    fail(impl_->where, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                           std::to_string(vocab_size()) + ")");
  return pieces_[static_cast<size_t>(id)];
}

float HfTokenizer::score(int64_t id) const {
  piece(id);  // range check
  if (impl_->model->score_merges())
    return id < impl_->model->size() ? impl_->model->score(id) : 0.0f;
  // A rank-merged vocabulary has no scores: a piece made by merge r scores -r, so that
  // SentencePiece-style score merging prefers the same merges; other pieces score lowest.
  std::call_once(impl_->derived_once, [&] {
    auto& d = impl_->derived_scores;
    d.assign(static_cast<size_t>(vocab_size()), -1e9f);
    const auto list = impl_->model->merge_list();
    for (size_t r = list.size(); r-- > 0;) {
      const int64_t p = impl_->model->id(list[r].first + list[r].second);
      if (p >= 0) d[static_cast<size_t>(p)] = -static_cast<float>(r);
    }
  });
  return impl_->derived_scores[static_cast<size_t>(id)];
}

std::vector<std::string> HfTokenizer::merges() const {
  std::vector<std::string> out;
  for (const auto& [a, b] : impl_->model->merge_list()) out.push_back(a + " " + b);
  return out;
}

json HfTokenizer::tokenizer_json() const {
  json j = source_.tokenizer;
  if (impl_->model->score_merges()) {
    json merges = json::array();
    for (const auto& [a, b] : impl_->model->merge_list()) {
      if (a.find(' ') == std::string::npos && b.find(' ') == std::string::npos)
        merges.push_back(a + " " + b);
      else
        merges.push_back(json::array({a, b}));
    }
    j["model"]["merges"] = std::move(merges);
  }
  return j;
}

void HfTokenizer::save(const std::filesystem::path& path) const {
  auto text = [](const std::string& verbatim, const json& j) {
    return !verbatim.empty() ? verbatim
                             : j.dump(1, ' ', false, json::error_handler_t::strict) + "\n";
  };
  if (!source_.tokenizer_text.empty() && !impl_->model->score_merges())
    io::write_text_atomically(path, source_.tokenizer_text);
  else
    io::write_text_atomically(path, text("", tokenizer_json()));
  const auto dir = path.parent_path();
  if (!source_.config.is_null())
    io::write_text_atomically(dir / "tokenizer_config.json",
                              text(source_.config_text, source_.config));
  if (!source_.generation.is_null())
    io::write_text_atomically(dir / "generation_config.json",
                              text(source_.generation_text, source_.generation));
}

std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json) {
  HfSource s;
  s.where = tokenizer_json.string();
  s.kind = "hf-bpe (tokenizer.json)";
  s.tokenizer_text = io::read_file(tokenizer_json);
  auto parse = [](const std::string& text, const std::filesystem::path& path) {
    try {
      return json::parse(text);
    } catch (const json::exception& e) {
      std::string what = e.what();
      std::replace(what.begin(), what.end(), '\n', ' ');
      fail(path.string(), "invalid JSON: " + what);
    }
  };
  s.tokenizer = parse(s.tokenizer_text, tokenizer_json);
  const auto dir = tokenizer_json.parent_path();
  if (std::filesystem::is_regular_file(dir / "tokenizer_config.json")) {
    s.config_text = io::read_file(dir / "tokenizer_config.json");
    s.config = parse(s.config_text, dir / "tokenizer_config.json");
  }
  if (std::filesystem::is_regular_file(dir / "generation_config.json")) {
    s.generation_text = io::read_file(dir / "generation_config.json");
    s.generation = parse(s.generation_text, dir / "generation_config.json");
  }
  return std::make_unique<HfTokenizer>(std::move(s));
}

}  // namespace flextron::text
