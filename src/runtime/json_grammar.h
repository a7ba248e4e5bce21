// Structured output: JSON that a JSON Schema (or "any object") accepts, recognised byte by byte,
// so that a decoder can keep only the tokens whose bytes leave the output a valid prefix
// (runtime/json_constraint.h scans the vocabulary with it).
//
// A schema compiles to a graph of nodes (object, array, string, number, integer, a set of
// literal texts for enum / const / true / false / null, and unions of those). A matcher is a
// pushdown automaton over them: a stack of frames, each a node being written and its phase
// ("after a key", "after an item", ...). The written form is compact JSON, with at most one
// space after ':' and ','. Three numbers keep every output finite and the constraint exact:
//   min_bytes(node)       the shortest text of a node (computed to a fixpoint over $refs);
//   min_to_complete()     the fewest bytes that finish the current output (sum over the stack);
//   can_finish()          whether the output is already a whole value.
// For every state that cannot finish, some byte lowers min_to_complete() by exactly one (the
// first byte of a shortest completion), so a decoder that keeps min_to_complete() within the
// tokens it has left always closes the JSON in time.
//
// Supported schema keywords: type (one or a list), properties, required, additionalProperties,
// items, minItems, maxItems, minLength, maxLength, enum, const, anyOf / oneOf (alternatives that
// begin with different bytes, e.g. a string or null), $ref to #/$defs/... or #/definitions/...
// (recursion allowed), plus annotations (title, description, default, examples, ...). Anything
// else is an error naming the keyword's path, never silently ignored. Objects write only their
// listed properties (any order, each at most once); an object without properties takes any keys.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace flextron::runtime {

class JsonGrammar {
 public:
  enum class Kind : uint8_t { Object, Array, String, Number, Integer, Literals, Union };
  static constexpr int64_t kUnbounded = INT64_MAX / 4;

  struct Node {
    Kind kind = Kind::Union;
    // Object: its properties, keys[i] the JSON text of the name (quotes included).
    std::vector<std::string> keys;
    std::vector<int32_t> key_values;
    uint64_t required = 0;     // bit i: keys[i] is required
    int32_t free_values = -1;  // >= 0: no properties listed, any key, values of this node
    // Array.
    int32_t items = -1;
    int64_t min_items = 0, max_items = kUnbounded;
    // String (characters).
    int64_t min_length = 0, max_length = kUnbounded;
    // Literals: the JSON texts it may be.
    std::vector<std::string> literals;
    // Union.
    std::vector<int32_t> alternatives;
    std::array<uint64_t, 4> first{};  // the bytes its text may begin with
    int64_t min_bytes = kUnbounded;
  };

  // Any JSON object (response_format "json_object").
  static std::shared_ptr<const JsonGrammar> any_object();
  // The values `schema` accepts (response_format "json_schema"'s "schema"). Throws
  // flextron::Error whose place is `where` + the keyword's path (where.properties.name.type) for
  // what cannot be constrained.
  static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::json& schema,
                                                        const std::string& where);

  const Node& node(int32_t i) const { return nodes_[static_cast<size_t>(i)]; }
  int32_t root() const { return root_; }
  int32_t plain_string() const { return plain_string_; }
  // The bytes every output may need as a token of its own: JSON's punctuation, digits, a
  // letter for string content, and every byte of the schema's keys and literals.
  std::array<uint64_t, 4> needed_bytes() const;

 private:
  friend class SchemaCompiler;
  int32_t add(Node node);
  int32_t any_value();  // a Union of every JSON type, made once
  void finish();        // first bytes, min_bytes, checks

  std::vector<Node> nodes_;
  int32_t root_ = -1, plain_string_ = -1, any_ = -1;
};

// Where an output stands in a grammar. Copyable in O(depth).
class JsonMatcher {
 public:
  static constexpr int kMaxDepth = 32;  // nesting deeper than this is never written

  explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar);
  JsonMatcher(const JsonMatcher& other) { *this = other; }
  JsonMatcher& operator=(const JsonMatcher& other);

  // Appends one byte; false (and the state unspecified) when the output would stop being a
  // prefix of an accepted text.
  bool feed(uint8_t byte);
  bool feed(const std::string& bytes);
  // Whether the output so far is a whole accepted value.
  bool can_finish() const;
  // The fewest bytes that make the output a whole accepted value (0 when can_finish()).
  int64_t min_to_complete() const;
  // Whether the output is inside a string, past its minLength, between characters: any text
  // without '"', '\\' or control bytes, whole UTF-8 characters, up to `room` characters then
  // keeps the state but for the count, and min_to_complete() as it is.
  bool in_plain_string(int64_t& room) const;

 private:
  enum class FrameKind : uint8_t { Root, Object, Array, String, Number, Literal, Key };
  struct Frame {
    int32_t node = -1;
    FrameKind kind = FrameKind::Root;
    uint8_t phase = 0;
    uint16_t aux = 0;   // string: UTF-8 bytes still due / hex digits; number: digits in part
    int32_t count = 0;  // array items, string characters, literal bytes matched
    int32_t key = -1;   // object: the property being written (-1: a free key)
    uint64_t bits = 0;  // object: properties written; literal / key: candidates alive
    uint16_t next = 0;  // string: the range of the next UTF-8 continuation byte (lo << 8 | hi)
  };
  enum class Step : uint8_t { Taken, Refused, PassUp };

  Step step(Frame& f, uint8_t c);
  bool start_value(int32_t node, uint8_t c);  // pushes node's frame and feeds it c
  bool push(const Frame& f);
  void pop_done();                       // pops the top frame, telling its parent it is complete
  bool accepting(const Frame& f) const;  // complete, though more bytes might extend it
  const std::vector<std::string>& candidates(const Frame& f) const;
  int64_t own_bytes(size_t i, bool& skip_next) const;
  int64_t object_close(const Frame& f, uint64_t written) const;

  std::shared_ptr<const JsonGrammar> grammar_;
  const JsonGrammar* g_ = nullptr;
  int depth_ = 0;
  std::array<Frame, kMaxDepth + 2> frames_;
};

}  // namespace flextron::runtime
