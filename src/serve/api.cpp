#include "serve/api.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "route/budget.h"
#include "route/select.h"

namespace flextron::serve {

using nlohmann::json;

ApiError::ApiError(int status, const std::string& message, std::string param, std::string type)
    : std::runtime_error(message), status(status), param(std::move(param)), type(std::move(type)) {}

json error_body(const std::string& message, const std::string& type, const std::string& param,
                int status) {
  json error = {{"message", message}, {"type", type}, {"code", status}};
  error["param"] = param.empty() ? json(nullptr) : json(param);
  return {{"error", error}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& message) {
  throw ApiError(400, "'" + param + "' " + message, param);
}

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number(const json& body, const char* name, double fallback) {
  const auto* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) bad(name, "must be a number");
  return v->get<double>();
}

int64_t integer(const json& body, const char* name, int64_t fallback) {
  const auto* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer() && !v->is_number_unsigned()) bad(name, "must be an integer");
  if (v->is_number_unsigned() &&
      v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(name, "is too large");
  return v->get<int64_t>();
}

std::string text(const json& body, const char* name, const std::string& fallback) {
  const auto* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_string()) bad(name, "must be a string");
  return v->get<std::string>();
}

bool boolean(const json& body, const char* name, bool fallback) {
  const auto* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad(name, "must be true or false");
  return v->get<bool>();
}

// Token ids as sent: integers >= 0 (the server checks them against the vocabulary).
std::optional<std::vector<int64_t>> token_ids(const json& v, const std::string& where) {
  if (!v.is_array() || v.empty() || !(v[0].is_number_integer() || v[0].is_number_unsigned()))
    return std::nullopt;
  std::vector<int64_t> ids;
  for (size_t i = 0; i < v.size(); ++i) {
    const auto& id = v[i];
    if (!(id.is_number_integer() || id.is_number_unsigned()) || id.get<double>() < 0 ||
        id.get<double>() > 1e15)
      bad(where, "element " + std::to_string(i) + " must be a token id (an integer >= 0)");
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

// OpenAI's four prompt shapes: a string, a list of strings, token ids, a list of token-id lists.
std::vector<Prompt> prompts(const json& body) {
  const auto* v = field(body, "prompt");
  if (v == nullptr) bad("prompt", "is required");
  if (v->is_string()) return {Prompt{v->get<std::string>(), {}, false}};
  const char* shapes = "must be a string, a list of strings, a list of token ids or a list of them";
  if (!v->is_array() || v->empty()) bad("prompt", shapes);
  if (auto ids = token_ids(*v, "prompt")) return {Prompt{"", *ids, true}};
  std::vector<Prompt> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& p = (*v)[i];
    const std::string where = "prompt[" + std::to_string(i) + "]";
    if (p.is_string()) {
      out.push_back({p.get<std::string>(), {}, false});
    } else if (auto ids = token_ids(p, where)) {
      out.push_back({"", *ids, true});
    } else {
      bad("prompt", std::string(shapes) + " (" + where + " is neither)");
    }
  }
  return out;
}

// Fields that change what a client gets back and that this server does not do: refused by name
// rather than ignored. Each is allowed at its no-op value.
void refuse_unsupported(const json& body, Endpoint endpoint) {
  auto given = [&](const char* name) {
    return field(body, name) != nullptr;
  };
  auto nonzero = [&](const char* name) {
    const auto* v = field(body, name);
    return v != nullptr && !(v->is_number() && v->get<double>() == 0.0);
  };
  auto nonempty = [&](const char* name) {
    const auto* v = field(body, name);
    return v != nullptr && !((v->is_object() || v->is_array() || v->is_string()) && v->empty());
  };
  for (const char* name :
       {"tools", "functions", "logit_bias", "suffix", "audio", "prediction", "web_search_options"})
    if (nonempty(name)) bad(name, "is not supported by this server");
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (nonzero(name)) bad(name, "is not supported by this server (only 0)");
  for (const char* name : {"tool_choice", "function_call"}) {
    const auto* v = field(body, name);
    if (v != nullptr && !(v->is_string() && v->get<std::string>() == "none"))
      bad(name, "is not supported by this server (only \"none\")");
  }
  if (const auto* v = field(body, "modalities"))
    if (*v != json::array({"text"})) bad("modalities", "must be [\"text\"]");
  if (given("best_of") && integer(body, "best_of", 1) != integer(body, "n", 1))
    bad("best_of", "is not supported by this server (only equal to n)");
  if (const auto* v = field(body, "response_format")) {
    if (!v->is_object() || !v->contains("type") || !(*v)["type"].is_string())
      bad("response_format", "must be an object with a string \"type\"");
    const auto type = (*v)["type"].get<std::string>();
    if (type != "text" && type != "json_object" && type != "json_schema")
      bad("response_format.type",
          "must be \"text\", \"json_object\" or \"json_schema\", got \"" + type + "\"");
  }
  if (endpoint == Endpoint::ChatCompletions && given("echo"))
    bad("echo", "is a completions field, not a chat one");
}

// The message part of a flextron::Error ("--router: unknown router ..." -> "unknown router ...").
std::string what_part(const std::exception& e) {
  const std::string m = e.what();
  const auto colon = m.find(": ");
  return colon == std::string::npos ? m : m.substr(colon + 2);
}

std::vector<std::string> stop_strings(const json& body) {
  const auto* v = field(body, "stop");
  if (v == nullptr) return {};
  if (v->is_string()) return {v->get<std::string>()};
  if (!v->is_array() || v->size() > 4) bad("stop", "must be a string or up to 4 strings");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string()) bad("stop", "must be a string or up to 4 strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

namespace {
// A message's content: a string, or text parts.
std::string message_text(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad(where, "must be a string or an array of text parts");
  // Text parts, concatenated as sent.
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const auto& part = content[j];
    const std::string at = where + "[" + std::to_string(j) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      bad(at, "must be an object with a string \"type\"");
    const auto type = part["type"].get<std::string>();
    if (type != "text")
      bad(at + ".type", "\"" + type + "\" is not supported (this model reads text parts only)");
    if (!part.contains("text") || !part["text"].is_string()) bad(at + ".text", "must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}
}  // namespace

std::string render_chat(const json& messages, std::vector<std::string>* stops,
                        const ChatSettings& chat) {
  if (!messages.is_array() || messages.empty()) bad("messages", "must be a non-empty array");
  std::vector<text::ChatMessage> parsed;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(where, "must be an object with role and content");
    const auto role = m.value("role", json()), content = m.value("content", json());
    if (!role.is_string()) bad(where + ".role", "must be a string");
    const auto r = role.get<std::string>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant")
      bad(where + ".role", "must be system, user or assistant, got \"" + r + "\"");
    parsed.push_back({r, message_text(content, where + ".content")});
  }
  auto prompt = text::render_chat(chat.format, parsed, chat.default_system);
  if (stops != nullptr) stops->insert(stops->end(), prompt.stop.begin(), prompt.stop.end());
  return prompt.text;
}

namespace {
json parse_body(const std::string& body_text) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number no double holds ("1e999").
    throw ApiError(400, std::string("request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "request body must be a JSON object");
  return body;
}
}  // namespace

TokenizeRequest parse_tokenize_request(const std::string& body_text) {
  const json body = parse_body(body_text);
  TokenizeRequest r;
  if (field(body, "content") == nullptr) bad("content", "is required");
  r.content = text(body, "content", "");
  r.add_special = boolean(body, "add_special", false);
  r.with_pieces = boolean(body, "with_pieces", false);
  return r;
}

std::vector<int64_t> parse_detokenize_request(const std::string& body_text, int64_t vocab) {
  const json body = parse_body(body_text);
  const auto* v = field(body, "tokens");
  if (v == nullptr) bad("tokens", "is required");
  if (!v->is_array()) bad("tokens", "must be an array of token ids");
  if (v->empty()) return {};
  auto ids = token_ids(*v, "tokens");
  if (!ids) bad("tokens", "must be an array of token ids");
  for (size_t i = 0; i < ids->size(); ++i)
    if ((*ids)[i] >= vocab)
      bad("tokens", "element " + std::to_string(i) + " is " + std::to_string((*ids)[i]) +
                        ", outside the vocabulary of " + std::to_string(vocab));
  return *ids;
}

// response_format as a grammar for constrained decoding (runtime/json_grammar.h); null for
// text. A schema that cannot be constrained is a 400 naming the keyword's path.
std::shared_ptr<const runtime::JsonGrammar> output_grammar(const json& body) {
  const auto* format = field(body, "response_format");
  if (format == nullptr) return nullptr;
  const auto type = (*format)["type"].get<std::string>();
  if (type == "json_object") return runtime::JsonGrammar::any_object();
  if (type != "json_schema") return nullptr;
  const auto* spec = field(*format, "json_schema");
  if (spec == nullptr || !spec->is_object())
    bad("response_format.json_schema",
        "is required with type \"json_schema\": {\"name\": ..., \"schema\": {...}}");
  if (const auto* name = field(*spec, "name"); name != nullptr && !name->is_string())
    bad("response_format.json_schema.name", "must be a string");
  if (const auto* strict = field(*spec, "strict"); strict != nullptr && !strict->is_boolean())
    bad("response_format.json_schema.strict", "must be true or false");
  const auto* schema = field(*spec, "schema");
  if (schema == nullptr) bad("response_format.json_schema.schema", "is required");
  try {
    return runtime::JsonGrammar::from_schema(*schema, "response_format.json_schema.schema");
  } catch (const Error& e) {
    // "<path>: <message>": the path is the parameter.
    const std::string m = e.what();
    const auto colon = m.find(": ");
    throw ApiError(400, "'" + m.substr(0, colon) + "' " + m.substr(colon + 2), m.substr(0, colon));
  }
}

CompletionRequest parse_completion_request(const std::string& body_text, Endpoint endpoint,
                                           const ChatSettings& chat) {
  const json body = parse_body(body_text);
  CompletionRequest r;
  r.endpoint = endpoint;
  refuse_unsupported(body, endpoint);
  r.model = text(body, "model", "");
  r.stop = stop_strings(body);
  if (endpoint == Endpoint::ChatCompletions) {
    const auto* messages = field(body, "messages");
    if (messages == nullptr) bad("messages", "is required");
    r.prompts = {Prompt{render_chat(*messages, &r.stop, chat), {}, false}};
    r.max_tokens = integer(body, "max_completion_tokens", integer(body, "max_tokens", 256));
    if (boolean(body, "logprobs", false)) {
      r.logprobs = integer(body, "top_logprobs", 0);
      if (r.logprobs < 0 || r.logprobs > 20) bad("top_logprobs", "must be in [0, 20]");
    } else if (field(body, "top_logprobs") != nullptr) {
      bad("top_logprobs", "needs \"logprobs\": true");
    }
  } else {
    r.prompts = prompts(body);
    r.max_tokens = integer(body, "max_tokens", 16);
    r.echo = boolean(body, "echo", false);
    if (field(body, "logprobs") != nullptr) {
      r.logprobs = integer(body, "logprobs", 0);
      if (r.logprobs < 0 || r.logprobs > 5) bad("logprobs", "must be in [0, 5]");
      if (r.echo)
        bad("echo", "with logprobs is not supported (prompt log-probabilities are not computed)");
    }
  }
  if (r.max_tokens < 1) bad("max_tokens", "must be >= 1");
  r.sampling.temperature = number(body, "temperature", 1.0);
  if (!(r.sampling.temperature >= 0.0 && r.sampling.temperature <= 2.0))
    bad("temperature", "must be in [0, 2]");
  r.sampling.top_p = number(body, "top_p", 1.0);
  if (!(r.sampling.top_p > 0.0 && r.sampling.top_p <= 1.0)) bad("top_p", "must be in (0, 1]");
  if (field(body, "seed") != nullptr) {
    r.sampling.seed = static_cast<uint64_t>(integer(body, "seed", 0));
    r.seed_given = true;
  }
  r.n = integer(body, "n", 1);
  if (r.n < 1 || r.n > kMaxChoices) bad("n", "must be in [1, " + std::to_string(kMaxChoices) + "]");
  if (static_cast<int64_t>(r.prompts.size()) * r.n > kMaxChoices)
    bad("prompt", std::to_string(r.prompts.size()) + " prompts x n = " + std::to_string(r.n) +
                      " choices is more than " + std::to_string(kMaxChoices));
  r.stream = boolean(body, "stream", false);
  if (const auto* options = field(body, "stream_options")) {
    if (!r.stream) bad("stream_options", "is only allowed with \"stream\": true");
    if (!options->is_object()) bad("stream_options", "must be an object");
    const auto* usage = field(*options, "include_usage");
    if (usage != nullptr && !usage->is_boolean())
      bad("stream_options.include_usage", "must be true or false");
    r.include_usage = usage != nullptr && usage->get<bool>();
  }
  r.output_grammar = output_grammar(body);
  r.budget_kind = text(body, "budget_kind", r.budget_kind);
  if (const auto* b = field(body, "budget")) {
    if (b->is_string()) {
      // A quality target ("ppl+2%"): budget_kind may say so or be left out.
      const auto target = b->get<std::string>();
      if (field(body, "budget_kind") == nullptr && route::looks_like_quality_target(target))
        r.budget_kind = "quality";
      if (r.budget_kind != "quality")
        bad("budget", "a " + r.budget_kind + " budget must be a number");
      try {
        r.quality_target = route::parse_quality_target(target, "budget").text;
      } catch (const Error& e) {
        bad("budget", what_part(e));
      }
    } else {
      if (r.budget_kind == "quality")
        bad("budget", "a quality budget is a target such as \"ppl+2%\", \"loss+0.05\" or "
                      "\"ppl<=250\"");
      const double v = number(body, "budget", 1.0);
      if (!std::isfinite(v) || v <= 0.0) bad("budget", "must be a positive number");
      r.budget = v;
    }
  } else if (r.budget_kind == "quality") {
    bad("budget", "budget_kind \"quality\" needs a target such as \"ppl+2%\"");
  }
  if (field(body, "speculative") != nullptr) r.speculative = boolean(body, "speculative", false);
  r.router = text(body, "router", r.router);
  try {
    route::parse_budget_kind(r.budget_kind);
  } catch (const Error& e) {
    bad("budget_kind", what_part(e));
  }
  try {
    route::parse_router_kind(r.router);
  } catch (const Error& e) {
    bad("router", what_part(e));
  }
  return r;
}

std::string finish_reason(const std::string& stop_reason) {
  if (stop_reason == "length" || stop_reason == "context") return "length";
  if (stop_reason == "eos" || stop_reason == "stop") return "stop";
  return stop_reason;
}

namespace {
json usage(const CompletionResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens}};
}

json byte_values(const std::string& piece) {
  json bytes = json::array();
  for (unsigned char c : piece) bytes.push_back(static_cast<int>(c));
  return bytes;
}
}  // namespace

json completion_logprobs(const std::vector<runtime::TokenLogprob>& tokens, size_t offset) {
  json pieces = json::array(), logprobs = json::array(), top = json::array(),
       offsets = json::array();
  for (const auto& t : tokens) {
    pieces.push_back(t.token.piece);
    logprobs.push_back(t.token.logprob);
    json alternatives = json::object();
    for (const auto& alt : t.top)
      if (!alternatives.contains(alt.piece)) alternatives[alt.piece] = alt.logprob;
    top.push_back(alternatives);
    offsets.push_back(offset);
    offset += t.token.piece.size();
  }
  return {{"tokens", pieces},
          {"token_logprobs", logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

json chat_logprobs(const std::vector<runtime::TokenLogprob>& tokens) {
  json content = json::array();
  for (const auto& t : tokens) {
    json top = json::array();
    for (const auto& alt : t.top)
      top.push_back(
          {{"token", alt.piece}, {"logprob", alt.logprob}, {"bytes", byte_values(alt.piece)}});
    content.push_back({{"token", t.token.piece},
                       {"logprob", t.token.logprob},
                       {"bytes", byte_values(t.token.piece)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

size_t tokens_within(const std::vector<runtime::TokenLogprob>& tokens, size_t bytes) {
  size_t start = 0, count = 0;
  for (const auto& t : tokens) {
    if (start >= bytes && !(start == bytes && t.token.piece.empty())) break;
    start += t.token.piece.size();
    ++count;
  }
  return count;
}

json completion_response(Endpoint endpoint, const CompletionResult& r) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json choices = json::array();
  for (size_t i = 0; i < r.choices.size(); ++i) {
    const auto& c = r.choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}, {"logprobs", c.logprobs}};
    if (chat)
      choice["message"] = {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
    else
      choice["text"] = c.text;
    choices.push_back(choice);
  }
  return {{"id", r.id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", r.created},
          {"model", r.model},
          {"system_fingerprint", nullptr},
          {"choices", choices},
          {"usage", usage(r)},
          {"flextron", r.flextron}};
}

json completion_chunk(Endpoint endpoint, const CompletionResult& r, size_t index,
                      const std::string& text, const json& logprobs, bool first, bool last) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json choice = {{"index", index}, {"logprobs", logprobs}};
  choice["finish_reason"] = last ? json(r.choices.at(index).finish_reason) : json(nullptr);
  if (chat) {
    choice["delta"] = json::object();
    if (first) choice["delta"]["role"] = "assistant";
    if (!text.empty() || !last) choice["delta"]["content"] = text;
  } else {
    choice["text"] = text;
  }
  json chunk = {{"id", r.id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", r.created},
                {"model", r.model},
                {"system_fingerprint", nullptr},
                {"choices", json::array({choice})}};
  if (last) chunk["flextron"] = r.flextron;
  return chunk;
}

json usage_chunk(Endpoint endpoint, const CompletionResult& r) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  return {{"id", r.id},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", r.created},
          {"model", r.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array()},
          {"usage", usage(r)},
          {"flextron", r.flextron}};
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace flextron::serve
