#include "serve/api.h"

#include <cmath>
#include <limits>

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

// A string, or an array holding exactly one string (OpenAI accepts batches; we serve one).
std::string prompt_text(const json& body) {
  const auto* v = field(body, "prompt");
  if (v == nullptr) bad("prompt", "is required");
  if (v->is_string()) return v->get<std::string>();
  if (v->is_array() && v->size() == 1 && (*v)[0].is_string()) return (*v)[0].get<std::string>();
  if (v->is_array()) bad("prompt", "must be one string (batched prompts are not supported)");
  bad("prompt", "must be a string");
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

std::string render_chat(const json& messages, std::vector<std::string>* stops) {
  if (!messages.is_array() || messages.empty()) bad("messages", "must be a non-empty array");
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(where, "must be an object with role and content");
    const auto role = m.value("role", json()), content = m.value("content", json());
    if (!role.is_string()) bad(where + ".role", "must be a string");
    if (!content.is_string()) bad(where + ".content", "must be a string");
    const auto r = role.get<std::string>();
    const auto c = content.get<std::string>();
    if (r == "system" || r == "developer")
      out += c + "\n\n";
    else if (r == "user")
      out += "User: " + c + "\n";
    else if (r == "assistant")
      out += "Assistant: " + c + "\n";
    else
      bad(where + ".role", "must be system, user or assistant, got \"" + r + "\"");
  }
  if (stops != nullptr) stops->insert(stops->end(), {"\nUser:", "\nAssistant:"});
  return out + "Assistant:";
}

CompletionRequest parse_completion_request(const std::string& body_text, Endpoint endpoint) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number no double holds ("1e999").
    throw ApiError(400, std::string("request body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "request body must be a JSON object");
  CompletionRequest r;
  r.endpoint = endpoint;
  r.model = text(body, "model", "");
  r.stop = stop_strings(body);
  if (endpoint == Endpoint::ChatCompletions) {
    const auto* messages = field(body, "messages");
    if (messages == nullptr) bad("messages", "is required");
    r.prompt = render_chat(*messages, &r.stop);
    r.max_tokens = integer(body, "max_completion_tokens", integer(body, "max_tokens", 256));
  } else {
    r.prompt = prompt_text(body);
    r.max_tokens = integer(body, "max_tokens", 16);
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
  if (integer(body, "n", 1) != 1) bad("n", "must be 1 (one completion per request)");
  if (const auto* s = field(body, "stream")) {
    if (!s->is_boolean()) bad("stream", "must be true or false");
    r.stream = s->get<bool>();
  }
  if (field(body, "budget") != nullptr) {
    const double b = number(body, "budget", 1.0);
    if (!std::isfinite(b) || b <= 0.0) bad("budget", "must be a positive number");
    r.budget = b;
  }
  r.budget_kind = text(body, "budget_kind", r.budget_kind);
  r.router = text(body, "router", r.router);
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
}  // namespace

json completion_response(Endpoint endpoint, const CompletionResult& r) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json choice = {{"index", 0}, {"finish_reason", r.finish_reason}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  } else {
    choice["text"] = r.text;
    choice["logprobs"] = nullptr;
  }
  return {{"id", r.id},
          {"object", chat ? "chat.completion" : "text_completion"},
          {"created", r.created},
          {"model", r.model},
          {"choices", json::array({choice})},
          {"usage", usage(r)},
          {"flextron", r.flextron}};
}

json completion_chunk(Endpoint endpoint, const CompletionResult& r, const std::string& text,
                      bool first, bool last) {
  const bool chat = endpoint == Endpoint::ChatCompletions;
  json choice = {{"index", 0}};
  choice["finish_reason"] = last ? json(r.finish_reason) : json(nullptr);
  if (chat) {
    choice["delta"] = json::object();
    if (first) choice["delta"]["role"] = "assistant";
    if (!text.empty() || !last) choice["delta"]["content"] = text;
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  json chunk = {{"id", r.id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", r.created},
                {"model", r.model},
                {"choices", json::array({choice})}};
  if (last) {
    chunk["usage"] = usage(r);
    chunk["flextron"] = r.flextron;
  }
  return chunk;
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace flextron::serve
