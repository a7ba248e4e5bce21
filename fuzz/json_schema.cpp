// response_format schemas and the text written under them: the bytes before the first NUL are a
// JSON Schema, the rest is fed to its matcher one byte at a time. A schema compiles or is a
// flextron::Error; every state keeps the invariants that make the constraint exact
// (min_to_complete() is 0 exactly when the output can end, and one accepted byte lowers it by at
// most one), and a text the matcher says is whole parses as JSON.
#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "runtime/json_grammar.h"

FLEXTRON_FUZZ_TARGET(json_schema) {
  using namespace flextron;
  const auto bytes = fuzz::bytes_of(data, size);
  const auto split = bytes.find('\0');
  const auto schema = nlohmann::json::parse(bytes.substr(0, split), nullptr, false);
  if (schema.is_discarded()) return 0;  // not JSON: the request parser reports that itself
  std::shared_ptr<const runtime::JsonGrammar> grammar;
  try {
    grammar = runtime::JsonGrammar::from_schema(schema, "schema");
  } catch (const Error&) {
    return 0;
  }
  runtime::JsonMatcher m(grammar);
  std::string text;
  const std::string tail = split == std::string::npos ? "" : bytes.substr(split + 1);
  for (char c : tail) {
    const int64_t before = m.min_to_complete();
    if ((before == 0) != m.can_finish()) fuzz::violated("min_to_complete() == 0 iff can_finish()");
    runtime::JsonMatcher next = m;
    if (!next.feed(static_cast<uint8_t>(c))) continue;  // refused: try the next byte instead
    if (next.min_to_complete() < before - 1)
      fuzz::violated("a byte lowered min_to_complete() by 2");
    m = next;
    text += c;
  }
  if (m.can_finish() && nlohmann::json::parse(text, nullptr, false).is_discarded())
    fuzz::violated("a whole value that does not parse: " + text);
  return 0;
}
