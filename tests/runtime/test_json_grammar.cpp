// Structured output: the JSON grammar against texts known to be valid or not, its shortest-
// completion count against the identity that makes it exact, and constrained sampling from
// stories260K over random schemas, every output checked by a JSON parser and by a schema
// validator written here from the JSON Schema definitions (not from the grammar).
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "runtime/fast_decoder.h"
#include "runtime/json_constraint.h"
#include "runtime/json_grammar.h"
#include "runtime/sequence.h"
#include "stories260k.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

using flextron::runtime::JsonConstraint;
using flextron::runtime::JsonGrammar;
using flextron::runtime::JsonMatcher;
using nlohmann::json;

std::shared_ptr<const JsonGrammar> grammar(const json& schema) {
  return JsonGrammar::from_schema(schema, "schema");
}

bool accepts(const std::shared_ptr<const JsonGrammar>& g, const std::string& text) {
  JsonMatcher m(g);
  return m.feed(text) && m.can_finish();
}

// ---- An independent validator: the keywords' meaning in JSON Schema. ----
bool valid(const json& s, const json& v, const json& root);

const json& resolve(const json& s, const json& root) {
  if (!s.is_object() || !s.contains("$ref")) return s;
  const std::string ref = s["$ref"];
  if (ref == "#") return root;
  const auto slash = ref.rfind('/');
  const std::string section = ref.substr(2, slash - 2), name = ref.substr(slash + 1);
  return root[section][name];
}

bool valid_type(const std::string& t, const json& v) {
  if (t == "string") return v.is_string();
  if (t == "integer")
    return v.is_number_integer() ||
           (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()));
  if (t == "number") return v.is_number();
  if (t == "boolean") return v.is_boolean();
  if (t == "null") return v.is_null();
  if (t == "array") return v.is_array();
  if (t == "object") return v.is_object();
  return false;
}

int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

bool valid(const json& schema, const json& v, const json& root) {
  const json& s = resolve(schema, root);
  if (s.is_boolean()) return s.get<bool>();
  if (s.contains("const") && v != s["const"]) return false;
  if (s.contains("enum") && std::find(s["enum"].begin(), s["enum"].end(), v) == s["enum"].end())
    return false;
  if (s.contains("anyOf")) {
    bool any = false;
    for (const auto& alt : s["anyOf"]) any = any || valid(alt, v, root);
    if (!any) return false;
  }
  if (s.contains("type")) {
    bool ok = false;
    if (s["type"].is_string())
      ok = valid_type(s["type"], v);
    else
      for (const auto& t : s["type"]) ok = ok || valid_type(t, v);
    if (!ok) return false;
  }
  if (v.is_string()) {
    const int64_t n = code_points(v.get<std::string>());
    if (s.contains("minLength") && n < s["minLength"].get<int64_t>()) return false;
    if (s.contains("maxLength") && n > s["maxLength"].get<int64_t>()) return false;
  }
  if (v.is_array()) {
    const auto n = static_cast<int64_t>(v.size());
    if (s.contains("minItems") && n < s["minItems"].get<int64_t>()) return false;
    if (s.contains("maxItems") && n > s["maxItems"].get<int64_t>()) return false;
    if (s.contains("items"))
      for (const auto& item : v)
        if (!valid(s["items"], item, root)) return false;
  }
  if (v.is_object()) {
    if (s.contains("required"))
      for (const auto& r : s["required"])
        if (!v.contains(r.get<std::string>())) return false;
    for (const auto& [key, value] : v.items()) {
      if (s.contains("properties") && s["properties"].contains(key)) {
        if (!valid(s["properties"][key], value, root)) return false;
      } else if (s.contains("additionalProperties")) {
        if (!valid(s["additionalProperties"], value, root)) return false;
      }
    }
  }
  return true;
}

// ---- Random schemas. ----
json random_schema(std::mt19937& rng, int depth) {
  auto pick = [&](int n) {
    return static_cast<int>(rng() % static_cast<unsigned>(n));
  };
  static const char* names[] = {"name", "age",   "id", "tags", "kind",
                                "x",    "value", "é",  "a b",  "n\"q"};
  const int kind = depth >= 3 ? pick(7) : pick(10);
  switch (kind) {
    case 0: {
      json s = {{"type", "string"}};
      if (pick(3) == 0) s["minLength"] = pick(3);
      if (pick(3) == 0) s["maxLength"] = 3 + pick(6);
      return s;
    }
    case 1:
      return {{"type", "integer"}};
    case 2:
      return {{"type", "number"}};
    case 3:
      return {{"type", "boolean"}};
    case 4:
      return {{"enum", json::array({"red", "green", "blue green", 7, 7.5, nullptr})}};
    case 5:
      return pick(2) ? json{{"type", json::array({"string", "null"})}}
                     : json{{"anyOf",
                             json::array({json{{"type", "integer"}}, json{{"type", "null"}}})}};
    case 6:
      return {{"const", pick(2) ? json("fixed") : json(42)}};
    case 7:
    case 8: {
      json s = {{"type", "object"}, {"properties", json::object()}};
      json required = json::array();
      const int n = 1 + pick(4);
      for (int i = 0; i < n; ++i) {
        const std::string name = names[pick(10)];
        s["properties"][name] = random_schema(rng, depth + 1);
        if (pick(3) != 0 && std::find(required.begin(), required.end(), name) == required.end())
          required.push_back(name);
      }
      s["required"] = required;
      if (pick(2)) s["additionalProperties"] = false;
      return s;
    }
    default: {
      json s = {{"type", "array"}, {"items", random_schema(rng, depth + 1)}};
      const int lo = pick(3);
      if (lo > 0) s["minItems"] = lo;
      if (pick(2)) s["maxItems"] = lo + pick(3);
      return s;
    }
  }
}

// ---- The grammar on known texts. ----

TEST(JsonGrammar, AcceptsWhatTheSchemaAcceptsAndRefusesTheRest) {
  const auto g = grammar(json::parse(R"({
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},
                   "tags": {"type": "array", "items": {"enum": ["a", "b", 1]}, "maxItems": 2},
                   "note": {"type": ["string", "null"]}},
    "required": ["name", "age"], "additionalProperties": false})"));
  EXPECT_TRUE(accepts(g, R"({"name":"Bob","age":3})"));
  EXPECT_TRUE(accepts(g, R"({"age": -12, "name": "\u00e9\n"})"));
  EXPECT_TRUE(accepts(g, R"({"name":"","age":0,"tags":["a",1],"note":null})"));
  EXPECT_TRUE(accepts(g, "{\"name\":\"\xc3\xa9t\xc3\xa9\",\"age\":1}"));
  EXPECT_FALSE(accepts(g, R"({"name":"Bob"})"));                   // age is required
  EXPECT_FALSE(accepts(g, R"({"name":"Bobby","age":1})"));         // maxLength 4
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1.5})"));           // an integer
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":01})"));            // no leading zeros
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1,"x":1})"));       // no other keys
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1,"name":"C"})"));  // each key once
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1,"tags":["c"]})"));
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1,"tags":["a","a","a"]})"));  // maxItems 2
  EXPECT_FALSE(accepts(g, "{\"name\":\"\xc3\",\"age\":1}"));      // half a UTF-8 character
  EXPECT_FALSE(accepts(g, "{\"name\":\"\xc0\xaf\",\"age\":1}"));  // an overlong encoding
  EXPECT_FALSE(accepts(g, "{\"name\":\"\t\",\"age\":1}"));        // control characters are escaped
  EXPECT_FALSE(accepts(g, R"( {"name":"B","age":1})"));           // no leading space
  EXPECT_FALSE(accepts(g, R"({"name":"B","age":1}x)"));           // nothing after the value

  const auto any = JsonGrammar::any_object();
  EXPECT_TRUE(accepts(any, R"({})"));
  EXPECT_TRUE(accepts(any, R"({"a": [1, 2.5e-3, true, null, {"b": "c"}], "": -0})"));
  EXPECT_FALSE(accepts(any, R"([1])"));  // json_object: an object
  EXPECT_FALSE(accepts(any, R"({"a":tru})"));

  // Numbers end where the next byte cannot extend them; a top-level one can end anywhere valid.
  const auto number = grammar(json{{"type", "number"}});
  EXPECT_TRUE(accepts(number, "-10.25E+3"));
  EXPECT_FALSE(accepts(number, "1."));
  EXPECT_FALSE(accepts(number, "-"));
  // A recursive $ref.
  const auto tree = grammar(json::parse(R"({"$defs": {"node": {"type": "object",
      "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["v"]}}, "$ref": "#/$defs/node"})"));
  EXPECT_TRUE(accepts(tree, R"({"v":1,"kids":[{"v":2},{"kids":[],"v":3}]})"));
  EXPECT_FALSE(accepts(tree, R"({"v":1,"kids":[{}]})"));
}

TEST(JsonGrammar, SchemasItCannotEnforceAreErrorsNamingTheKeyword) {
  auto message = [](const json& schema) {
    try {
      grammar(schema);
    } catch (const flextron::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(json::parse(
                        R"({"type":"object","properties":{"a":{"type":"string","pattern":"x+"}}})"))
                .find("schema.properties.a.pattern: is not supported"),
            std::string::npos);
  EXPECT_NE(message(json::parse(
                        R"({"anyOf":[{"type":"object"},{"type":"object","properties":{"a":{}}}]})"))
                .find("can both begin with '{'"),
            std::string::npos);
  EXPECT_NE(message(json::parse(R"({"type":"strin"})")).find("schema.type: unknown type"),
            std::string::npos);
  EXPECT_NE(message(json::parse(R"({"type":"object","properties":{"a":{}},"required":["b"]})"))
                .find("not in properties"),
            std::string::npos);
  EXPECT_NE(message(json::parse(R"({"$ref":"#/$defs/missing"})")).find("does not name a schema"),
            std::string::npos);
  EXPECT_NE(
      message(
          json::parse(
              R"({"$defs":{"n":{"type":"object","properties":{"n":{"$ref":"#/$defs/n"}},"required":["n"]}},"$ref":"#/$defs/n"})"))
          .find("no finite JSON value"),
      std::string::npos);
  // Bounds a request body cannot get past: nesting and size.
  json deep = {{"type", "string"}};
  for (int i = 0; i < 100; ++i) deep = {{"type", "array"}, {"items", deep}};
  EXPECT_NE(message(deep).find("nests deeper than 64"), std::string::npos);
  json wide = {{"anyOf", json::array()}};
  for (int i = 0; i < 5000; ++i) wide["anyOf"].push_back({{"type", "array"}});
  EXPECT_NE(message(wide).find("larger than 4096 parts"), std::string::npos);
  // Literal alternatives merge, so they may begin alike.
  EXPECT_EQ(message(json::parse(R"({"anyOf":[{"const":"a"},{"const":"b"},{"type":"null"}]})")),
            "no error");
}

// min_to_complete() is exact when three things hold in every state: it is 0 exactly when the
// output can end, no byte lowers it by more than one, and some byte lowers it by exactly one.
// (Then it is a lower bound on the bytes left, and the bytes that lower it reach the end.)
// Checked over random walks through random schemas, each walk ending in a text the JSON parser
// and the validator accept.
TEST(JsonGrammar, ShortestCompletionIsExactAndWalksEndInValidJson) {
  std::mt19937 rng(11);
  int walks = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const json schema = trial % 5 == 4 ? json{{"type", "object"}} : random_schema(rng, 0);
    SCOPED_TRACE(schema.dump());
    const auto g = grammar(schema);
    JsonMatcher m(g);
    std::string text;
    for (int steps = 0; steps < 400; ++steps) {
      const int64_t now = m.min_to_complete();
      ASSERT_EQ(now == 0, m.can_finish()) << text;
      std::vector<uint8_t> lowering, others;
      for (int c = 0; c < 256; ++c) {
        JsonMatcher next = m;
        if (!next.feed(static_cast<uint8_t>(c))) continue;
        const int64_t after = next.min_to_complete();
        ASSERT_GE(after, now - 1) << text << " + byte " << c;
        (after == now - 1 ? lowering : others).push_back(static_cast<uint8_t>(c));
      }
      if (m.can_finish() && (others.empty() || rng() % 4 == 0)) break;
      ASSERT_TRUE(m.can_finish() || !lowering.empty()) << text;
      // Wander for a while, then head for the end.
      const bool wander = steps < 40 && !others.empty() && rng() % 3 != 0;
      const auto& from = wander || lowering.empty() ? others : lowering;
      const uint8_t c = from[rng() % from.size()];
      ASSERT_TRUE(m.feed(c));
      text += static_cast<char>(c);
    }
    ASSERT_TRUE(m.can_finish()) << text;
    json value;
    ASSERT_NO_THROW(value = json::parse(text)) << text;
    EXPECT_TRUE(valid(schema, value, schema)) << text;
    ++walks;
  }
  EXPECT_EQ(walks, 300);
}

// ---- Over a real vocabulary. ----

class Letters : public flextron::text::Tokenizer {
 public:
  std::vector<int64_t> encode(const std::string&, bool) const override { return {}; }
  std::string decode_piece(int64_t, int64_t t) const override { return piece(t); }
  int64_t vocab_size() const override { return 28; }
  int64_t bos_id() const override { return 0; }
  int64_t eos_id() const override { return 1; }
  std::string piece(int64_t id) const override { return std::string(1, char('a' + id - 2)); }
  float score(int64_t) const override { return 0.0f; }
  std::string file_name() const override { return "letters"; }
  void save(const std::filesystem::path&) const override {}
};

TEST(JsonConstraint, AVocabularyWithoutTheNeededBytesIsAnError) {
  const Letters letters;
  auto vocab = std::make_shared<flextron::runtime::VocabularyBytes>(letters);
  try {
    JsonConstraint(vocab, JsonGrammar::any_object(), "response_format");
    FAIL() << "no error";
  } catch (const flextron::Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("response_format: the model's tokenizer has no token for '\"'"),
        std::string::npos)
        << e.what();
  }
}

// The scan (prefix sharing, skipped failed prefixes, plain string text decided by length)
// allows exactly the tokens that feeding each one's bytes to the matcher alone allows, on a
// 32000-token SentencePiece vocabulary, in states from every frame kind and with tight budgets.
TEST(JsonConstraint, ScanEqualsFeedingEveryTokenAlone) {
  const auto tokenizer = flextron::text::load_sentencepiece_tokenizer(
      flextron::testing::shared_data() / "tokenizers/llama2_tokenizer.model");
  auto vocab = std::make_shared<flextron::runtime::VocabularyBytes>(*tokenizer);
  const auto g = grammar(json::parse(R"({"type":"object","properties":{
      "name":{"type":"string","minLength":2,"maxLength":6},"nick":{"type":"string"},
      "n":{"type":"number"},"ok":{"type":"boolean"},"list":{"type":"array","items":{"enum":["ab","abc",1]}}},
      "required":["name","n"]})"));
  std::vector<uint8_t> allowed(static_cast<size_t>(tokenizer->vocab_size()));
  int checked = 0;
  for (const std::string prefix :
       {"", "{", "{\"na", "{\"name\":\"", "{\"name\":\"abcd", "{\"nick\":\"x\\", "{\"nick\":\"\xc3",
        "{\"n\":-1", "{\"n\":1.5e", "{\"list\":[\"ab", "{\"ok\":t", "{\"nick\":\"hello world"}) {
    SCOPED_TRACE(prefix);
    JsonConstraint c(vocab, g, "response_format");
    JsonMatcher m(g);
    ASSERT_TRUE(m.feed(prefix));
    for (char ch : prefix)
      for (int64_t id = 0; id < vocab->size(); ++id)
        if (vocab->bytes(id) == std::string(1, ch)) {
          c.accept(id);
          break;
        }
    for (int64_t after : {int64_t{1000}, m.min_to_complete(), m.min_to_complete() + 1}) {
      c.allowed(after, allowed);
      int64_t differences = 0, count = 0;
      for (int64_t id = 0; id < vocab->size(); ++id) {
        JsonMatcher alone = m;
        const bool ok = !vocab->bytes(id).empty() && alone.feed(vocab->bytes(id)) &&
                        alone.min_to_complete() <= after;
        differences += ok != (allowed[static_cast<size_t>(id)] != 0);
        count += ok;
      }
      EXPECT_EQ(differences, 0) << "budget " << after;
      checked += count > 0;
    }
  }
  EXPECT_GT(checked, 20);
}

// stories260K on the fast runtime with its tokenizer's vocabulary, for sampling under a
// constraint.
struct Stories {
  flextron::model::Transformer model = flextron::testing::load_stories260k();
  std::unique_ptr<flextron::text::Tokenizer> tokenizer = flextron::text::load_llama2c_tokenizer(
      flextron::testing::shared_data() / "stories260K/tok512.bin", 512);
  std::shared_ptr<flextron::runtime::VocabularyBytes> vocab =
      std::make_shared<flextron::runtime::VocabularyBytes>(*tokenizer);
  flextron::runtime::FastDecoder engine{*model};
};

// 50 random schemas, sampled at temperature 1 from stories260K (which knows nothing of JSON):
// every output parses, validates, and ends with the end-of-sequence token within max_tokens.
TEST(JsonConstraint, SampledOutputAlwaysParsesAndValidates) {
  Stories stories;
  auto& tokenizer = stories.tokenizer;
  auto& vocab = stories.vocab;
  auto& engine = stories.engine;
  std::mt19937 rng(5);
  int tight = 0;
  for (int trial = 0; trial < 50; ++trial) {
    const json schema = trial % 10 == 9 ? json{{"type", "object"}} : random_schema(rng, 0);
    SCOPED_TRACE(schema.dump());
    const auto g = trial % 10 == 9 ? JsonGrammar::any_object() : grammar(schema);
    auto constraint = std::make_unique<JsonConstraint>(vocab, g, "response_format");
    // Some runs get barely enough tokens: the output must still close in time.
    const int64_t shortest = constraint->min_tokens() + 1;
    const int64_t max_tokens = trial % 3 == 0 ? shortest + 2 : shortest + 60;
    tight += trial % 3 == 0;
    flextron::runtime::SamplingOptions sampling;
    sampling.temperature = 1.0;
    sampling.seed = static_cast<uint64_t>(trial);
    flextron::runtime::Sequence seq(engine, *tokenizer, tokenizer->encode("Once upon", true),
                                    max_tokens, sampling, {});
    seq.constrain(std::move(constraint));
    seq.prefill();
    while (!seq.finished()) seq.decode_step();
    const std::string text = seq.take_text();
    EXPECT_EQ(seq.stop_reason(), "eos") << text;
    json value;
    ASSERT_NO_THROW(value = json::parse(text)) << text;
    EXPECT_TRUE(valid(schema, value, schema)) << text;
  }
  EXPECT_GT(tight, 10);
}

// Forked choices keep the constraint: each starts from the state before the first token.
TEST(JsonConstraint, ForkedChoicesAreConstrainedToo) {
  Stories stories;
  auto& tokenizer = stories.tokenizer;
  auto& vocab = stories.vocab;
  auto& engine = stories.engine;
  const json schema =
      json::parse(R"({"type":"object","properties":{"w":{"type":"string"}},"required":["w"]})");
  flextron::runtime::SamplingOptions sampling;
  sampling.temperature = 1.0;
  flextron::runtime::Sequence seq(engine, *tokenizer, tokenizer->encode("Once", true), 40, sampling,
                                  {});
  seq.constrain(std::make_unique<JsonConstraint>(vocab, grammar(schema), "response_format"));
  seq.prefill();
  auto other = seq.fork(99);
  std::set<std::string> texts;
  for (auto* s : {&seq, other.get()}) {
    while (!s->finished()) s->decode_step();
    const auto text = s->take_text();
    ASSERT_NO_THROW(EXPECT_TRUE(valid(schema, json::parse(text), schema))) << text;
    texts.insert(text);
  }
  EXPECT_EQ(texts.size(), 2u);
}

}  // namespace
