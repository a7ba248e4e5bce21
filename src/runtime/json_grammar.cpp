#include "runtime/json_grammar.h"

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace flextron::runtime {

namespace {

using json = nlohmann::json;
using Kind = JsonGrammar::Kind;
using Bytes = std::array<uint64_t, 4>;
constexpr int64_t kInf = JsonGrammar::kUnbounded;
// Digits a number may have per part: keeps every output finite.
constexpr int kMaxIntDigits = 15, kMaxFracDigits = 15, kMaxExpDigits = 2;
constexpr size_t kMaxCandidates = 64;  // properties of an object, values of an enum
// Bounds on a schema (a request body can hold any JSON): nesting, and nodes compiled, which
// also bounds the fixpoint in JsonGrammar::finish().
constexpr int kMaxSchemaDepth = 64;
constexpr size_t kMaxNodes = 4096;

void set_byte(Bytes& b, uint8_t c) {
  b[c >> 6] |= uint64_t{1} << (c & 63);
}
bool has_byte(const Bytes& b, uint8_t c) {
  return (b[c >> 6] >> (c & 63)) & 1;
}
void set_bytes(Bytes& b, const std::string& s) {
  for (char c : s) set_byte(b, static_cast<uint8_t>(c));
}
int64_t add_bounded(int64_t a, int64_t b) {
  return std::min(kInf, a + b);
}
int64_t mul_bounded(int64_t a, int64_t b) {
  return a == 0 || b == 0 ? 0 : (a >= kInf / b ? kInf : a * b);
}
bool is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}
bool is_hex(uint8_t c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

std::string describe_byte(uint8_t c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  static const char* hex = "0123456789abcdef";
  return std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Compiling a schema.

class SchemaCompiler {
 public:
  SchemaCompiler(JsonGrammar& g, const json& document, std::string where)
      : g_(g), document_(document), where_(std::move(where)) {}

  int32_t compile(const json& s, const std::string& path) {
    if (++depth_ > kMaxSchemaDepth)
      fail(path, "nests deeper than " + std::to_string(kMaxSchemaDepth) +
                     " schemas; constrained output takes at most that");
    const int32_t node = compile_here(s, path);
    --depth_;
    return node;
  }

 private:
  int32_t add(JsonGrammar::Node n, const std::string& path) {
    if (g_.nodes_.size() >= kMaxNodes)
      fail(path, "makes the schema larger than " + std::to_string(kMaxNodes) +
                     " parts; constrained output takes at most that");
    return g_.add(std::move(n));
  }

  int32_t compile_here(const json& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail(path, "the schema false accepts no value");
      return g_.any_value();
    }
    if (!s.is_object()) fail(path, "a schema must be an object or a boolean");
    static const std::set<std::string> annotations = {
        "title",      "description", "default",   "examples", "$schema",     "$id",   "$comment",
        "deprecated", "readOnly",    "writeOnly", "$defs",    "definitions", "strict"};
    static const std::set<std::string> keywords = {
        "type",      "properties", "required", "additionalProperties",
        "items",     "minItems",   "maxItems", "minLength",
        "maxLength", "enum",       "const",    "anyOf",
        "oneOf",     "$ref"};
    for (const auto& [key, value] : s.items())
      if (!annotations.count(key) && !keywords.count(key))
        fail(path + "." + key,
             "is not supported by constrained output (supported: " + supported_list() + ")");
    if (s.contains("$ref")) return reference(s, path);
    if (s.contains("const")) return literals({s["const"]}, path + ".const");
    if (s.contains("enum")) {
      const auto& e = s["enum"];
      if (!e.is_array() || e.empty()) fail(path + ".enum", "must be a non-empty array");
      return literals(std::vector<json>(e.begin(), e.end()), path + ".enum");
    }
    for (const char* alt : {"anyOf", "oneOf"})
      if (s.contains(alt)) {
        const auto& list = s[alt];
        if (!list.is_array() || list.empty())
          fail(path + "." + alt, "must be a non-empty array of schemas");
        std::vector<int32_t> parts;
        for (size_t i = 0; i < list.size(); ++i)
          parts.push_back(compile(list[i], path + "." + alt + "[" + std::to_string(i) + "]"));
        return union_of(parts, path + "." + alt);
      }
    if (!s.contains("type")) {
      if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required"))
        return typed(s, "object", path);
      if (s.contains("items")) return typed(s, "array", path);
      return g_.any_value();
    }
    const auto& type = s["type"];
    if (type.is_string()) return typed(s, type.get<std::string>(), path);
    if (!type.is_array() || type.empty())
      fail(path + ".type", "must be a type name or a non-empty list of them");
    std::vector<int32_t> parts;
    bool number = false;
    for (const auto& t : type) {
      if (!t.is_string()) fail(path + ".type", "must list type names");
      number = number || t == "number";
    }
    for (const auto& t : type)
      if (!(number && t == "integer")) parts.push_back(typed(s, t.get<std::string>(), path));
    return union_of(parts, path + ".type");
  }

  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    flextron::fail(path, message);
  }
  static std::string supported_list() {
    return "type, properties, required, additionalProperties, items, minItems, maxItems, "
           "minLength, maxLength, enum, const, anyOf, oneOf, $ref";
  }

  int64_t count(const json& s, const char* key, const std::string& path, int64_t fallback) {
    if (!s.contains(key)) return fallback;
    const auto& v = s[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail(path + "." + key, "must be a non-negative integer");
    return std::min(v.get<int64_t>(), kInf);
  }

  int32_t typed(const json& s, const std::string& type, const std::string& path) {
    JsonGrammar::Node n;
    if (type == "string") {
      n.kind = Kind::String;
      n.min_length = count(s, "minLength", path, 0);
      n.max_length = count(s, "maxLength", path, kInf);
      if (n.min_length > n.max_length) fail(path + ".minLength", "exceeds maxLength");
      return add(std::move(n), path);
    }
    if (type == "number" || type == "integer") {
      n.kind = type == "number" ? Kind::Number : Kind::Integer;
      return add(std::move(n), path);
    }
    if (type == "boolean") return literals({true, false}, path);
    if (type == "null") return literals({nullptr}, path);
    if (type == "array") {
      n.kind = Kind::Array;
      n.min_items = count(s, "minItems", path, 0);
      n.max_items = count(s, "maxItems", path, kInf);
      if (n.min_items > n.max_items) fail(path + ".minItems", "exceeds maxItems");
      const int32_t self = add(std::move(n), path);
      const int32_t items =
          s.contains("items") ? compile(s["items"], path + ".items") : g_.any_value();
      g_.nodes_[static_cast<size_t>(self)].items = items;
      return self;
    }
    if (type == "object") {
      n.kind = Kind::Object;
      const int32_t self = add(std::move(n), path);
      JsonGrammar::Node built;
      built.kind = Kind::Object;
      if (s.contains("properties")) {
        const auto& props = s["properties"];
        if (!props.is_object()) fail(path + ".properties", "must be an object of schemas");
        if (props.size() > kMaxCandidates)
          fail(path + ".properties", "has " + std::to_string(props.size()) +
                                         " properties; constrained output takes at most " +
                                         std::to_string(kMaxCandidates));
        for (const auto& [name, sub] : props.items()) {
          built.keys.push_back(json(name).dump());
          built.key_values.push_back(compile(sub, path + ".properties." + name));
        }
      }
      if (s.contains("required")) {
        const auto& req = s["required"];
        if (!req.is_array()) fail(path + ".required", "must be an array of property names");
        for (const auto& r : req) {
          if (!r.is_string()) fail(path + ".required", "must list property names");
          const auto at = std::find(built.keys.begin(), built.keys.end(), json(r).dump());
          if (at == built.keys.end())
            fail(path + ".required",
                 "names \"" + r.get<std::string>() + "\", which is not in properties");
          built.required |= uint64_t{1} << (at - built.keys.begin());
        }
      }
      if (built.keys.empty()) {
        // No properties listed: any keys, values of additionalProperties (any when absent or
        // true). With properties, only they are written: a subset the schema accepts either way.
        const json* extra =
            s.contains("additionalProperties") ? &s["additionalProperties"] : nullptr;
        if (extra != nullptr && extra->is_boolean() && !extra->get<bool>())
          built.free_values = -1;  // {} only
        else
          built.free_values = extra != nullptr && !extra->is_boolean()
                                  ? compile(*extra, path + ".additionalProperties")
                                  : g_.any_value();
      } else if (s.contains("additionalProperties")) {
        const auto& extra = s["additionalProperties"];
        if (!extra.is_boolean() && !extra.is_object())
          fail(path + ".additionalProperties", "must be a boolean or a schema");
      }
      g_.nodes_[static_cast<size_t>(self)] = std::move(built);
      return self;
    }
    fail(path + ".type",
         "unknown type \"" + type + "\" (string, number, integer, boolean, null, array, object)");
  }

  int32_t literals(const std::vector<json>& values, const std::string& path) {
    if (values.size() > kMaxCandidates)
      fail(path, "has " + std::to_string(values.size()) +
                     " values; constrained output takes at most " + std::to_string(kMaxCandidates));
    JsonGrammar::Node n;
    n.kind = Kind::Literals;
    for (const auto& v : values) {
      std::string text;
      try {
        text = v.dump();
      } catch (const json::exception&) {
        fail(path, "holds a string that is not valid UTF-8");
      }
      if (std::find(n.literals.begin(), n.literals.end(), text) == n.literals.end())
        n.literals.push_back(text);
    }
    return add(std::move(n), path);
  }

  int32_t reference(const json& s, const std::string& path) {
    if (!s["$ref"].is_string()) fail(path + ".$ref", "must be a string");
    const auto ref = s["$ref"].get<std::string>();
    if (const auto at = refs_.find(ref); at != refs_.end()) return at->second;
    const json* target = nullptr;
    if (ref == "#") {
      target = &document_;
    } else {
      for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
        const std::string p = prefix;
        if (ref.rfind(p, 0) != 0) continue;
        const std::string section = p.substr(2, p.size() - 3), name = ref.substr(p.size());
        if (document_.contains(section) && document_[section].is_object() &&
            document_[section].contains(name))
          target = &document_[section][name];
      }
    }
    if (target == nullptr)
      fail(path + ".$ref", "\"" + ref +
                               "\" does not name a schema of this document (#, #/$defs/NAME or "
                               "#/definitions/NAME)");
    // A union placeholder first, so a recursive reference finds it; it then holds the one
    // alternative the target compiles to.
    JsonGrammar::Node holder;
    holder.kind = Kind::Union;
    const int32_t self = add(std::move(holder), path);
    refs_[ref] = self;
    std::string at = where_;
    for (size_t i = 1; i < ref.size(); ++i) at += ref[i] == '/' ? '.' : ref[i];
    const int32_t body = compile(*target, at);
    g_.nodes_[static_cast<size_t>(self)].alternatives = {body};
    return self;
  }

  int32_t union_of(const std::vector<int32_t>& given, const std::string& path) {
    // Literal alternatives (enum, const, boolean, null) merge into one set, which may hold
    // texts that begin alike.
    std::vector<int32_t> parts;
    int32_t words = -1;
    for (int32_t p : given) {
      if (g_.node(p).kind != Kind::Literals) {
        parts.push_back(p);
        continue;
      }
      if (words < 0) {
        JsonGrammar::Node merged;
        merged.kind = Kind::Literals;
        words = add(std::move(merged), path);
        parts.push_back(words);
      }
      const auto texts = g_.node(p).literals;
      auto& into = g_.nodes_[static_cast<size_t>(words)].literals;
      for (const auto& t : texts)
        if (std::find(into.begin(), into.end(), t) == into.end()) into.push_back(t);
      if (into.size() > kMaxCandidates)
        fail(path, "has more than " + std::to_string(kMaxCandidates) + " literal values");
    }
    if (parts.size() == 1) return parts[0];
    JsonGrammar::Node n;
    n.kind = Kind::Union;
    n.alternatives = parts;
    const int32_t self = add(std::move(n), path);
    unions_.push_back({self, path});
    return self;
  }

 public:
  // After first bytes are known: the alternatives of a union must begin differently, so the
  // first byte decides which one is being written.
  void check_unions() const {
    for (const auto& [index, path] : unions_) {
      const auto& n = g_.node(index);
      Bytes seen{};
      for (size_t a = 0; a < n.alternatives.size(); ++a) {
        const auto& first = g_.node(n.alternatives[a]).first;
        for (int c = 0; c < 256; ++c) {
          const auto byte = static_cast<uint8_t>(c);
          if (!has_byte(first, byte) || !has_byte(seen, byte)) continue;
          size_t b = 0;
          while (!has_byte(g_.node(n.alternatives[b]).first, byte)) ++b;
          fail(path, "alternatives " + std::to_string(b) + " and " + std::to_string(a) +
                         " can both begin with " + describe_byte(byte) +
                         "; constrained output needs alternatives of different JSON types "
                         "(e.g. a string or null)");
        }
        for (size_t w = 0; w < 4; ++w) seen[w] |= first[w];
      }
    }
  }

 private:
  JsonGrammar& g_;
  const json& document_;
  std::string where_;
  std::map<std::string, int32_t> refs_;
  std::vector<std::pair<int32_t, std::string>> unions_;
  int depth_ = 0;
};

int32_t JsonGrammar::add(Node node) {
  nodes_.push_back(std::move(node));
  return static_cast<int32_t>(nodes_.size()) - 1;
}

int32_t JsonGrammar::any_value() {
  if (any_ >= 0) return any_;
  any_ = add(Node{});  // a Union, filled below (its parts refer back to it)
  Node object;
  object.kind = Kind::Object;
  object.free_values = any_;
  Node array;
  array.kind = Kind::Array;
  array.items = any_;
  Node number;
  number.kind = Kind::Number;
  Node words;
  words.kind = Kind::Literals;
  words.literals = {"true", "false", "null"};
  const int32_t parts[] = {add(std::move(object)), add(std::move(array)), plain_string_,
                           add(std::move(number)), add(std::move(words))};
  nodes_[static_cast<size_t>(any_)].alternatives.assign(std::begin(parts), std::end(parts));
  return any_;
}

void JsonGrammar::finish() {
  // First bytes and shortest texts, to a fixpoint (references may be recursive).
  for (bool changed = true; changed;) {
    changed = false;
    for (auto& n : nodes_) {
      Bytes first{};
      int64_t shortest = kInf;
      switch (n.kind) {
        case Kind::Object: {
          set_byte(first, '{');
          int64_t sum = 2, members = 0;
          for (size_t i = 0; i < n.keys.size(); ++i)
            if ((n.required >> i) & 1) {
              sum = add_bounded(sum, static_cast<int64_t>(n.keys[i].size()) + 1 +
                                         node(n.key_values[i]).min_bytes);
              ++members;
            }
          shortest = add_bounded(sum, std::max<int64_t>(0, members - 1));
          break;
        }
        case Kind::Array: {
          set_byte(first, '[');
          shortest = add_bounded(2, add_bounded(mul_bounded(n.min_items, node(n.items).min_bytes),
                                                std::max<int64_t>(0, n.min_items - 1)));
          break;
        }
        case Kind::String:
          set_byte(first, '"');
          shortest = add_bounded(2, n.min_length);
          break;
        case Kind::Number:
        case Kind::Integer:
          set_byte(first, '-');
          for (uint8_t c = '0'; c <= '9'; ++c) set_byte(first, c);
          shortest = 1;
          break;
        case Kind::Literals:
          for (const auto& l : n.literals) {
            set_byte(first, static_cast<uint8_t>(l[0]));
            shortest = std::min(shortest, static_cast<int64_t>(l.size()));
          }
          break;
        case Kind::Union:
          for (int32_t a : n.alternatives) {
            const auto& alt = node(a);
            for (int w = 0; w < 4; ++w)
              first[static_cast<size_t>(w)] |= alt.first[static_cast<size_t>(w)];
            shortest = std::min(shortest, alt.min_bytes);
          }
          break;
      }
      if (first != n.first || shortest != n.min_bytes) {
        n.first = first;
        n.min_bytes = shortest;
        changed = true;
      }
    }
  }
}

std::array<uint64_t, 4> JsonGrammar::needed_bytes() const {
  Bytes b{};
  set_bytes(b, "{}[],:\"-.0123456789a");
  for (const auto& n : nodes_) {
    for (const auto& k : n.keys) set_bytes(b, k);
    for (const auto& l : n.literals) set_bytes(b, l);
  }
  return b;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  auto g = std::make_shared<JsonGrammar>();
  Node plain;
  plain.kind = Kind::String;
  g->plain_string_ = g->add(std::move(plain));
  Node object;
  object.kind = Kind::Object;
  g->root_ = g->add(std::move(object));
  const int32_t any = g->any_value();
  g->nodes_[static_cast<size_t>(g->root_)].free_values = any;
  g->finish();
  return g;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const nlohmann::json& schema,
                                                            const std::string& where) {
  auto g = std::make_shared<JsonGrammar>();
  Node plain;
  plain.kind = Kind::String;
  g->plain_string_ = g->add(std::move(plain));
  SchemaCompiler compiler(*g, schema, where);
  g->root_ = compiler.compile(schema, where);
  g->finish();
  compiler.check_unions();
  // A node without a finite text (a required property that recurses forever) is unwritable.
  if (g->node(g->root_).min_bytes >= kInf)
    flextron::fail(where,
                   "no finite JSON value satisfies this schema (a required property "
                   "refers back to itself?)");
  return g;
}

// ---------------------------------------------------------------------------------------------
// Matching.

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonGrammar> grammar)
    : grammar_(std::move(grammar)), g_(grammar_.get()) {
  frames_[0] = Frame{};
  frames_[0].kind = FrameKind::Root;
  frames_[0].node = g_->root();
  depth_ = 1;
}

JsonMatcher& JsonMatcher::operator=(const JsonMatcher& other) {
  if (this == &other) return *this;
  if (grammar_ != other.grammar_) grammar_ = other.grammar_;
  g_ = other.g_;
  depth_ = other.depth_;
  std::copy(other.frames_.begin(), other.frames_.begin() + depth_, frames_.begin());
  return *this;
}

const std::vector<std::string>& JsonMatcher::candidates(const Frame& f) const {
  const auto& n = g_->node(f.node);
  return f.kind == FrameKind::Key ? n.keys : n.literals;
}

bool JsonMatcher::push(const Frame& f) {
  if (depth_ >= static_cast<int>(frames_.size())) return false;
  frames_[static_cast<size_t>(depth_++)] = f;
  return true;
}

bool JsonMatcher::start_value(int32_t index, uint8_t c) {
  // A union: the alternative that may begin with c (they begin differently).
  while (g_->node(index).kind == JsonGrammar::Kind::Union) {
    int32_t chosen = -1;
    for (int32_t a : g_->node(index).alternatives)
      if (has_byte(g_->node(a).first, c)) {
        chosen = a;
        break;
      }
    if (chosen < 0) return false;
    index = chosen;
  }
  const auto& n = g_->node(index);
  if (!has_byte(n.first, c)) return false;
  Frame f;
  f.node = index;
  switch (n.kind) {
    case JsonGrammar::Kind::Object:
    case JsonGrammar::Kind::Array:
      // Containers open only below the depth limit (so a Key / String child still fits).
      if (depth_ >= kMaxDepth) return false;
      f.kind = n.kind == JsonGrammar::Kind::Object ? FrameKind::Object : FrameKind::Array;
      break;
    case JsonGrammar::Kind::String:
      f.kind = FrameKind::String;
      break;
    case JsonGrammar::Kind::Number:
    case JsonGrammar::Kind::Integer:
      f.kind = FrameKind::Number;
      break;
    case JsonGrammar::Kind::Literals:
      f.kind = FrameKind::Literal;
      f.bits = n.literals.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << n.literals.size()) - 1;
      break;
    case JsonGrammar::Kind::Union:
      return false;
  }
  if (!push(f)) return false;
  return feed(c);
}

void JsonMatcher::pop_done() {
  const Frame child = frames_[static_cast<size_t>(--depth_)];
  Frame& parent = frames_[static_cast<size_t>(depth_ - 1)];
  switch (parent.kind) {
    case FrameKind::Root:
      parent.phase = 1;
      break;
    case FrameKind::Array:
      ++parent.count;
      parent.phase = 2;
      break;
    case FrameKind::Object:
      if (parent.phase == 5) {  // the key is written
        parent.key = -1;
        if (child.kind == FrameKind::Key) {
          const auto& keys = g_->node(child.node).keys;
          for (size_t i = 0; i < keys.size(); ++i)
            if (((child.bits >> i) & 1) && static_cast<int32_t>(keys[i].size()) == child.count)
              parent.key = static_cast<int32_t>(i);
        }
        parent.phase = 6;
      } else {  // its value is written
        if (parent.key >= 0) parent.bits |= uint64_t{1} << parent.key;
        parent.phase = 2;
      }
      break;
    default:
      break;  // only containers have children
  }
}

bool JsonMatcher::accepting(const Frame& f) const {
  if (f.kind == FrameKind::Number)
    return f.phase == 2 || f.phase == 3 || f.phase == 5 || f.phase == 8;
  if (f.kind == FrameKind::Literal) {
    const auto& c = candidates(f);
    for (size_t i = 0; i < c.size(); ++i)
      if (((f.bits >> i) & 1) && static_cast<int32_t>(c[i].size()) == f.count) return true;
  }
  return false;
}

JsonMatcher::Step JsonMatcher::step(Frame& f, uint8_t c) {
  const auto& n = g_->node(f.node);
  switch (f.kind) {
    case FrameKind::Root:
      if (f.phase != 0) return Step::Refused;
      f.phase = 9;
      return start_value(f.node, c) ? Step::Taken : Step::Refused;

    case FrameKind::Object: {
      const uint64_t all = n.keys.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << n.keys.size()) - 1;
      const bool free = n.keys.empty();
      const bool more = free ? n.free_values >= 0 : (all & ~f.bits) != 0;
      const bool closable = (n.required & ~f.bits) == 0;
      auto open_key = [&]() {
        f.phase = 5;
        Frame k;
        if (free) {
          k.kind = FrameKind::String;
          k.node = g_->plain_string();
        } else {
          k.kind = FrameKind::Key;
          k.node = f.node;
          k.bits = all & ~f.bits;
        }
        // The reference may dangle after push: nothing below touches f.
        return push(k) && feed(c) ? Step::Taken : Step::Refused;
      };
      switch (f.phase) {
        case 0:
          if (c != '{') return Step::Refused;
          f.phase = 1;
          return Step::Taken;
        case 1:
          if (c == '}' && closable) return pop_done(), Step::Taken;
          if (c == '"' && more) return open_key();
          return Step::Refused;
        case 2:
          if (c == ',' && more) return f.phase = 3, Step::Taken;
          if (c == '}' && closable) return pop_done(), Step::Taken;
          return Step::Refused;
        case 3:
          if (c == ' ') return f.phase = 4, Step::Taken;
          [[fallthrough]];
        case 4:
          return c == '"' ? open_key() : Step::Refused;
        case 6:
          if (c != ':') return Step::Refused;
          f.phase = 7;
          return Step::Taken;
        case 7:
          if (c == ' ') return f.phase = 8, Step::Taken;
          [[fallthrough]];
        case 8: {
          const int32_t value =
              f.key >= 0 ? n.key_values[static_cast<size_t>(f.key)] : n.free_values;
          f.phase = 9;
          return start_value(value, c) ? Step::Taken : Step::Refused;
        }
        default:
          return Step::Refused;
      }
    }

    case FrameKind::Array:
      switch (f.phase) {
        case 0:
          if (c != '[') return Step::Refused;
          f.phase = 1;
          return Step::Taken;
        case 1:
          if (c == ']' && n.min_items == 0) return pop_done(), Step::Taken;
          if (n.max_items == 0) return Step::Refused;
          f.phase = 9;
          return start_value(n.items, c) ? Step::Taken : Step::Refused;
        case 2:
          if (c == ',' && f.count < n.max_items) return f.phase = 3, Step::Taken;
          if (c == ']' && f.count >= n.min_items) return pop_done(), Step::Taken;
          return Step::Refused;
        case 3:
          if (c == ' ') return f.phase = 4, Step::Taken;
          [[fallthrough]];
        case 4:
          f.phase = 9;
          return start_value(n.items, c) ? Step::Taken : Step::Refused;
        default:
          return Step::Refused;
      }

    case FrameKind::String:
      switch (f.phase) {
        case 0:
          if (c != '"') return Step::Refused;
          f.phase = 1;
          return Step::Taken;
        case 1:
          if (f.aux > 0) {  // inside a UTF-8 character
            if (c < (f.next >> 8) || c > (f.next & 0xff)) return Step::Refused;
            --f.aux;
            f.next = 0x80bf;
            return Step::Taken;
          }
          if (c == '"') return f.count >= n.min_length ? (pop_done(), Step::Taken) : Step::Refused;
          if (f.count >= n.max_length || c < 0x20) return Step::Refused;
          if (c == '\\') return f.phase = 2, Step::Taken;
          if (c >= 0x80) {
            // Lead bytes and the range of the byte after them (RFC 3629: no overlongs, no
            // surrogates, nothing past U+10FFFF).
            if (c >= 0xc2 && c <= 0xdf)
              f.aux = 1, f.next = 0x80bf;
            else if (c == 0xe0)
              f.aux = 2, f.next = 0xa0bf;
            else if (c == 0xed)
              f.aux = 2, f.next = 0x809f;
            else if (c >= 0xe1 && c <= 0xef)
              f.aux = 2, f.next = 0x80bf;
            else if (c == 0xf0)
              f.aux = 3, f.next = 0x90bf;
            else if (c >= 0xf1 && c <= 0xf3)
              f.aux = 3, f.next = 0x80bf;
            else if (c == 0xf4)
              f.aux = 3, f.next = 0x808f;
            else
              return Step::Refused;
          }
          ++f.count;
          return Step::Taken;
        case 2:  // after a backslash
          if (c == 'u') return f.phase = 3, f.aux = 0, Step::Taken;
          if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' &&
              c != 't')
            return Step::Refused;
          ++f.count;
          f.phase = 1;
          return Step::Taken;
        case 3:  // \u: four hex digits, the first 0 (below U+1000: never half a surrogate pair)
          if (!is_hex(c) || (f.aux == 0 && c != '0')) return Step::Refused;
          if (++f.aux == 4) {
            f.aux = 0;
            f.phase = 1;
            ++f.count;
          }
          return Step::Taken;
        default:
          return Step::Refused;
      }

    case FrameKind::Number: {
      const bool integer = n.kind == JsonGrammar::Kind::Integer;
      const bool digit = is_digit(c);
      switch (f.phase) {
        case 0:
          if (c == '-') return f.phase = 1, Step::Taken;
          [[fallthrough]];
        case 1:
          if (c == '0') return f.phase = 2, Step::Taken;
          if (digit) return f.phase = 3, f.aux = 1, Step::Taken;
          return Step::Refused;
        case 2:
        case 3:
          if (f.phase == 3 && digit && f.aux < kMaxIntDigits) return ++f.aux, Step::Taken;
          if (!integer && c == '.') return f.phase = 4, Step::Taken;
          if (!integer && (c == 'e' || c == 'E')) return f.phase = 6, Step::Taken;
          return Step::PassUp;
        case 4:
          return digit ? (f.phase = 5, f.aux = 1, Step::Taken) : Step::Refused;
        case 5:
          if (digit && f.aux < kMaxFracDigits) return ++f.aux, Step::Taken;
          if (c == 'e' || c == 'E') return f.phase = 6, Step::Taken;
          return Step::PassUp;
        case 6:
          if (c == '+' || c == '-') return f.phase = 7, Step::Taken;
          [[fallthrough]];
        case 7:
          return digit ? (f.phase = 8, f.aux = 1, Step::Taken) : Step::Refused;
        case 8:
          return digit && f.aux < kMaxExpDigits ? (++f.aux, Step::Taken) : Step::PassUp;
        default:
          return Step::Refused;
      }
    }

    case FrameKind::Literal:
    case FrameKind::Key: {
      const auto& list = candidates(f);
      uint64_t alive = 0;
      bool longer = false;
      for (size_t i = 0; i < list.size(); ++i)
        if (((f.bits >> i) & 1) && static_cast<int32_t>(list[i].size()) > f.count &&
            static_cast<uint8_t>(list[i][static_cast<size_t>(f.count)]) == c) {
          alive |= uint64_t{1} << i;
          longer = longer || static_cast<int32_t>(list[i].size()) > f.count + 1;
        }
      if (alive == 0) return accepting(f) ? Step::PassUp : Step::Refused;
      f.bits = alive;
      ++f.count;
      if (!longer) pop_done();  // every candidate left ends here: nothing can extend it
      return Step::Taken;
    }
  }
  return Step::Refused;
}

bool JsonMatcher::feed(uint8_t c) {
  while (depth_ > 0) {
    Frame& top = frames_[static_cast<size_t>(depth_ - 1)];
    switch (step(top, c)) {
      case Step::Taken:
        return true;
      case Step::Refused:
        return false;
      case Step::PassUp:
        pop_done();  // the number or literal is complete; the byte belongs to its parent
        break;
    }
  }
  return false;
}

bool JsonMatcher::feed(const std::string& bytes) {
  for (char c : bytes)
    if (!feed(static_cast<uint8_t>(c))) return false;
  return true;
}

bool JsonMatcher::can_finish() const {
  for (int i = depth_ - 1; i >= 1; --i)
    if (!accepting(frames_[static_cast<size_t>(i)])) return false;
  // Every open frame above the root may end here; the root has its value once they do.
  return depth_ == 1 ? frames_[0].phase == 1 : frames_[0].phase == 9;
}

int64_t JsonMatcher::object_close(const Frame& f, uint64_t written) const {
  // ',"key":value' for every required property not yet written, then '}'.
  const auto& n = g_->node(f.node);
  int64_t sum = 1;
  for (size_t i = 0; i < n.keys.size(); ++i)
    if (((n.required & ~written) >> i) & 1)
      sum = add_bounded(
          sum, 2 + static_cast<int64_t>(n.keys[i].size()) + g_->node(n.key_values[i]).min_bytes);
  return sum;
}

int64_t JsonMatcher::own_bytes(size_t i, bool& skip_next) const {
  const Frame& f = frames_[i];
  const auto& n = g_->node(f.node);
  skip_next = false;
  switch (f.kind) {
    case FrameKind::Root:
      return f.phase == 0 ? n.min_bytes : 0;
    case FrameKind::Object: {
      const uint64_t written = f.bits | (f.key >= 0 && f.phase >= 6 ? uint64_t{1} << f.key : 0);
      const int64_t close = object_close(f, written);  // after a member
      const bool pending = (n.required & ~written) != 0;
      const int64_t free_value = n.free_values >= 0 ? g_->node(n.free_values).min_bytes : kInf;
      switch (f.phase) {
        case 0:
          return add_bounded(1, pending ? close - 1 : 1);
        case 1:
          return pending ? close - 1 : 1;
        case 2:
          return close;
        case 3:
        case 4: {
          if (pending) return close - 1;
          // A comma is written: one more member, the cheapest.
          int64_t best = n.keys.empty() ? add_bounded(3, free_value) : kInf;
          for (size_t k = 0; k < n.keys.size(); ++k)
            if (!((f.bits >> k) & 1))
              best = std::min(best, add_bounded(static_cast<int64_t>(n.keys[k].size()) + 1,
                                                g_->node(n.key_values[k]).min_bytes));
          return add_bounded(best, 1);
        }
        case 5: {
          const Frame& child = frames_[i + 1];
          if (child.kind != FrameKind::Key) return add_bounded(add_bounded(1, free_value), close);
          // The key being matched counts here: the cheapest of the candidates still alive.
          skip_next = true;
          int64_t best = kInf;
          for (size_t k = 0; k < n.keys.size(); ++k)
            if ((child.bits >> k) & 1) {
              const int64_t rest = static_cast<int64_t>(n.keys[k].size()) - child.count + 1;
              best =
                  std::min(best, add_bounded(add_bounded(rest, g_->node(n.key_values[k]).min_bytes),
                                             object_close(f, f.bits | (uint64_t{1} << k))));
            }
          return best;
        }
        case 6:
        case 7:
        case 8: {
          const int32_t value =
              f.key >= 0 ? n.key_values[static_cast<size_t>(f.key)] : n.free_values;
          return add_bounded(add_bounded(f.phase == 6 ? 1 : 0, g_->node(value).min_bytes), close);
        }
        default:
          return close;  // 9: the value's frame counts itself
      }
    }
    case FrameKind::Array: {
      const int64_t item = g_->node(n.items).min_bytes;
      auto items = [&](int64_t k) {  // k items with commas between them
        return k == 0 ? 0 : add_bounded(mul_bounded(k, item), k - 1);
      };
      switch (f.phase) {
        case 0:
          return add_bounded(2, items(n.min_items));
        case 1:
          return add_bounded(1, items(n.min_items));
        case 2: {
          const int64_t k = std::max<int64_t>(0, n.min_items - f.count);
          return add_bounded(mul_bounded(k, add_bounded(item, 1)), 1);
        }
        case 3:
        case 4:
          return add_bounded(items(std::max<int64_t>(1, n.min_items - f.count)), 1);
        default: {
          const int64_t k = std::max<int64_t>(0, n.min_items - f.count - 1);
          return add_bounded(mul_bounded(k, add_bounded(item, 1)), 1);
        }
      }
    }
    case FrameKind::String: {
      const int64_t chars = std::max<int64_t>(0, n.min_length - f.count);
      switch (f.phase) {
        case 0:
          return add_bounded(chars, 2);
        case 1:
          return add_bounded(chars, 1 + f.aux);
        case 2:
          return add_bounded(std::max<int64_t>(0, chars - 1), 2);
        default:
          return add_bounded(std::max<int64_t>(0, chars - 1), 4 - f.aux + 1);
      }
    }
    case FrameKind::Number:
      return accepting(f) ? 0 : 1;
    case FrameKind::Literal:
    case FrameKind::Key: {
      const auto& list = candidates(f);
      int64_t best = kInf;
      for (size_t k = 0; k < list.size(); ++k)
        if ((f.bits >> k) & 1)
          best = std::min(best, static_cast<int64_t>(list[k].size()) - f.count);
      return best;
    }
  }
  return kInf;
}

bool JsonMatcher::in_plain_string(int64_t& room) const {
  const Frame& top = frames_[static_cast<size_t>(depth_ - 1)];
  if (top.kind != FrameKind::String || top.phase != 1 || top.aux != 0) return false;
  const auto& n = g_->node(top.node);
  if (top.count < n.min_length) return false;
  room = n.max_length - top.count;
  return true;
}

int64_t JsonMatcher::min_to_complete() const {
  int64_t total = 0;
  for (size_t i = 0; i < static_cast<size_t>(depth_); ++i) {
    bool skip = false;
    total = add_bounded(total, own_bytes(i, skip));
    if (skip) ++i;
  }
  return total;
}

}  // namespace flextron::runtime
