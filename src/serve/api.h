// The OpenAI-compatible API's requests and responses (POST /v1/completions and
// /v1/chat/completions), as plain data: parsing and validation that need no model, errors in
// OpenAI's shape, and the response and streaming-chunk bodies.
//
// Fields read: model, prompt (a string, token ids, or a list of either) / messages (content a
// string or text parts), max_tokens (max_completion_tokens for chat), temperature, top_p, seed,
// stop, stream, stream_options.include_usage, n, echo, logprobs (completions: the number of
// alternatives; chat: true, with top_logprobs), response_format type "text"; and Flextron's own:
// budget, budget_kind, router. A field that would change the output and that we do not serve
// (tools, logit_bias, penalties, suffix, structured response formats, ...) is a 400 naming it,
// never silently ignored.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/json_grammar.h"
#include "runtime/sampler.h"
#include "text/chat_template.h"

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

// The most choices one request may ask for (prompts x n).
constexpr int64_t kMaxChoices = 16;

// One prompt: text to encode, or token ids as sent (the server checks them against the vocabulary
// and puts BOS first when they do not start with it).
struct Prompt {
  std::string text;
  std::vector<int64_t> tokens;
  bool is_tokens = false;
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;            // as sent (echoed back); empty = the served model
  std::vector<Prompt> prompts;  // chat: one, the messages rendered by the chat template
  int64_t n = 1;                // choices per prompt
  bool echo = false;            // completions: the prompt's text starts each choice's text
  int64_t logprobs = -1;        // -1: none; k >= 0: each token's and the k likeliest alternatives'
  bool include_usage = false;   // streams: a last chunk with usage and no choices
  int64_t max_tokens = 16;
  runtime::SamplingOptions sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  // response_format json_object / json_schema: the grammar every choice is constrained to
  // (null: free text).
  std::shared_ptr<const runtime::JsonGrammar> output_grammar;
  bool stream = false;
  std::optional<double> budget;  // absent: the server's default
  std::string budget_kind = "latency";
  std::string quality_target;  // budget_kind "quality": "budget" as written ("ppl+2%")
  std::string router = "static";
  std::optional<bool> speculative;  // absent: the server's default (--speculative)
};

// How chat messages become a prompt: the model's template family (text/chat_template.h) and the
// system message it adds when a conversation has none.
struct ChatSettings {
  text::ChatFormat format = text::ChatFormat::Flextron;
  std::string default_system;
};

// Parses and checks a request body. Throws ApiError(400) naming the field for malformed JSON,
// missing or mistyped fields and values out of range.
CompletionRequest parse_completion_request(const std::string& body, Endpoint endpoint,
                                           const ChatSettings& chat = {});

// POST /tokenize and /detokenize (llama-server's shapes).
struct TokenizeRequest {
  std::string content;
  bool add_special = false;  // BOS first
  bool with_pieces = false;  // {"id", "piece"} objects instead of bare ids
};
TokenizeRequest parse_tokenize_request(const std::string& body);
// {"tokens": [id, ...]}, each id in [0, vocab).
std::vector<int64_t> parse_detokenize_request(const std::string& body, int64_t vocab);

// The messages (content a string or text parts) in the chat template, ending with the
// assistant's turn opened. `stop_strings` gets the template's end-of-turn markers, so a model
// that runs on into the next turn stops there.
std::string render_chat(const nlohmann::json& messages, std::vector<std::string>* stop_strings,
                        const ChatSettings& chat = {});

// OpenAI's finish_reason for a sequence's stop reason: "length" (tokens or context ran out),
// "stop" (end of sequence or a stop string), or "cancelled".
std::string finish_reason(const std::string& stop_reason);

struct ChoiceResult {
  std::string text;
  std::string finish_reason;
  nlohmann::json logprobs;  // completion_logprobs() / chat_logprobs(), or null
};

struct CompletionResult {
  std::string id;
  int64_t created = 0;
  std::string model;
  std::vector<ChoiceResult> choices;  // choice i*n + j: prompt i's j-th
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  nlohmann::json flextron;  // what the budget chose and what it measured
};

// Log-probabilities in each endpoint's shape. Completions: {tokens, token_logprobs,
// top_logprobs: [{piece: logprob}], text_offset} with offsets counted from `offset` bytes into
// the choice's text. Chat: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob,
// bytes}]}], refusal: null}.
nlohmann::json completion_logprobs(const std::vector<runtime::TokenLogprob>& tokens,
                                   size_t offset = 0);
nlohmann::json chat_logprobs(const std::vector<runtime::TokenLogprob>& tokens);
// The first entries of `tokens` whose pieces start within the first `bytes` bytes of their
// concatenation (the entries behind a text cut by a stop string, or not yet streamed, are left).
size_t tokens_within(const std::vector<runtime::TokenLogprob>& tokens, size_t bytes);

// The whole non-streamed response.
nlohmann::json completion_response(Endpoint endpoint, const CompletionResult& r);
// One streamed chunk of choice `index` carrying `text` and its tokens' `logprobs` (null: none);
// the first chat chunk also carries the role. A choice's last chunk has its finish reason and
// the flextron object.
nlohmann::json completion_chunk(Endpoint endpoint, const CompletionResult& r, size_t index,
                                const std::string& text, const nlohmann::json& logprobs, bool first,
                                bool last);
// stream_options.include_usage: the last chunk, with usage and no choices.
nlohmann::json usage_chunk(Endpoint endpoint, const CompletionResult& r);

// A JSON body as text; invalid UTF-8 (a character cut by max_tokens) becomes U+FFFD.
std::string dump(const nlohmann::json& j);

}  // namespace flextron::serve
