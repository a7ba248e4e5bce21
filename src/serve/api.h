// The OpenAI-compatible API's requests and responses (POST /v1/completions and
// /v1/chat/completions), as plain data: parsing and validation that need no model, errors in
// OpenAI's shape, and the response and streaming-chunk bodies.
//
// Fields read: model, prompt / messages, max_tokens (max_completion_tokens for chat), temperature,
// top_p, seed, stop, stream, n (1 only); and Flextron's own: budget, budget_kind, router.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/sampler.h"

namespace flextron::serve {

// An error answered to the client: HTTP status and OpenAI's error object.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, std::string param = {},
           std::string type = "invalid_request_error");
  int status;
  std::string param;
  std::string type;
};

// {"error": {"message", "type", "param", "code"}}.
nlohmann::json error_body(const std::string& message, const std::string& type,
                          const std::string& param, int status);

enum class Endpoint { Completions, ChatCompletions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;   // as sent (echoed back); empty = the served model
  std::string prompt;  // chat: the messages rendered by the chat template
  int64_t max_tokens = 16;
  runtime::SamplingOptions sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  std::optional<double> budget;  // absent: the server's default
  std::string budget_kind = "latency";
  std::string router = "static";
};

// Parses and checks a request body. Throws ApiError(400) naming the field for malformed JSON,
// missing or mistyped fields and values out of range.
CompletionRequest parse_completion_request(const std::string& body, Endpoint endpoint);

// The chat template: an optional system message, then "User: ...\nAssistant: ..." turns, ending
// with "Assistant:" for the model to continue. `stop_strings` gets the turn markers, so a model
// that runs on into the next turn stops there.
std::string render_chat(const nlohmann::json& messages, std::vector<std::string>* stop_strings);

// OpenAI's finish_reason for a sequence's stop reason: "length" (tokens or context ran out),
// "stop" (end of sequence or a stop string), or "cancelled".
std::string finish_reason(const std::string& stop_reason);

struct CompletionResult {
  std::string id;
  int64_t created = 0;
  std::string model;
  std::string text;
  std::string finish_reason;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  nlohmann::json flextron;  // what the budget chose and what it measured
};

// The whole non-streamed response.
nlohmann::json completion_response(Endpoint endpoint, const CompletionResult& r);
// One streamed chunk carrying `text` (the first chat chunk also carries the role). The last
// chunk has the finish reason, usage and the flextron object.
nlohmann::json completion_chunk(Endpoint endpoint, const CompletionResult& r,
                                const std::string& text, bool first, bool last);

// A JSON body as text; invalid UTF-8 (a character cut by max_tokens) becomes U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace flextron::serve
