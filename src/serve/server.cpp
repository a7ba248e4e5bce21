#include "serve/server.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <ATen/Parallel.h>
#include <httplib.h>

#include "core/error.h"
#include "io/files.h"
#include "route/budget.h"
#include "route/latency.h"
#include "route/router_file.h"
#include "route/router_pipeline.h"
#include "route/select.h"
#include "runtime/json_constraint.h"
#include "runtime/quant_kernels.h"
#include "runtime/sequence.h"
#include "serve/api.h"
#include "serve/connections.h"

namespace flextron::serve {

using nlohmann::json;

namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body) + "\n", "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  if (e.status == 503) res.set_header("Retry-After", "1");
  send_json(res, e.status, error_body(e.what(), e.type, e.param, e.status));
}

// The metrics label of a path: known endpoints by name, everything else as one series.
std::string path_label(const std::string& path) {
  static const char* known[] = {
      "/health",   "/metrics",   "/v1/models", "/v1/completions", "/v1/chat/completions",
      "/tokenize", "/detokenize"};
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  for (const char* k : known)
    if (path == k) return path;
  return "other";
}

std::string budget_label(const route::Budget& b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", b.value);
  if (b.kind == route::BudgetKind::Quality) return "quality:" + b.quality.text;
  return b.kind == route::BudgetKind::Latency ? buf : route::budget_kind_name(b.kind) + ":" + buf;
}

}  // namespace

struct Server::Impl {
  Impl(const std::filesystem::path& dir, io::LoadedModel& loaded, const ServerOptions& options)
      : dir(dir),
        loaded(loaded),
        options(options),
        engine(*loaded.model, *loaded.tokenizer, options.engine, metrics),
        vocabulary(std::make_shared<runtime::VocabularyBytes>(*loaded.tokenizer)),
        seeds(std::random_device{}()) {}

  std::filesystem::path dir;
  io::LoadedModel& loaded;
  ServerOptions options;
  Metrics metrics;
  Engine engine;
  std::shared_ptr<const runtime::VocabularyBytes> vocabulary;  // structured output's
  std::string draft_label;  // --speculative: the draft chosen at start
  httplib::Server http;
  std::mutex mutex;                                                 // plans, seeds
  std::map<std::string, std::shared_ptr<route::BudgetPlan>> plans;  // static and uniform
  std::mt19937_64 seeds;
  const int64_t started_at = static_cast<int64_t>(std::time(nullptr));
  int listen_socket = -1;
  std::once_flag stopped;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> requests{0};

  void routes();
  bool authorized(const httplib::Request& req, httplib::Response& res) const;
  std::shared_ptr<route::BudgetPlan> plan_for(const CompletionRequest& r, route::Budget* budget);
  json flextron_object(const JobSpec& spec, const JobOutcome& outcome) const;
  void completion(const std::string& body, httplib::Response& res, Endpoint endpoint);
  // The request's response_format over the vocabulary; ApiError(400) when the tokenizer cannot
  // write it or the shortest valid output does not fit in max_tokens or the context.
  std::shared_ptr<const runtime::TokenConstraint> output_constraint(
      const CompletionRequest& request, const std::vector<std::vector<int64_t>>& prompts,
      bool is_chat) const;
  // A prompt's ids (BOS first), checked against the vocabulary and the context; ApiError(400)
  // naming `where` otherwise.
  std::vector<int64_t> prompt_tokens(const Prompt& prompt, const std::string& where, bool chat);
  ChatSettings chat;
  text::SpecialTokens chat_specials;  // the template's special tokens this vocabulary holds
  std::vector<int64_t> chat_stop_ids;
  // The request body, read through `reader` up to options.max_body_bytes whatever its
  // encoding; false (and the error response sent) when it is too large or unreadable.
  bool read_body(const httplib::ContentReader& reader, httplib::Response& res, std::string& body);
  json model_object() const;  // the /v1/models entry (reads the router files: built once)
  json model_body;
  void tokenize(const std::string& body, httplib::Response& res) const;
  void detokenize(const std::string& body, httplib::Response& res) const;
};

bool Server::Impl::authorized(const httplib::Request& req, httplib::Response& res) const {
  if (options.api_key.empty() || req.path == "/health") return true;
  if (req.get_header_value("Authorization") == "Bearer " + options.api_key) return true;
  send_json(res, 401,
            error_body(req.has_header("Authorization")
                           ? "incorrect API key in the Authorization header"
                           : "missing API key: send \"Authorization: Bearer KEY\"",
                       "invalid_request_error", "", 401));
  return false;
}

// The plan for a request's budget; null runs the full model. Static and uniform plans are a
// table look-up, computed once per budget and shared; a dynamic router keeps per-sequence state
// (its attention choice), so each dynamic request gets its own.
std::shared_ptr<route::BudgetPlan> Server::Impl::plan_for(const CompletionRequest& r,
                                                          route::Budget* budget) {
  budget->kind = route::parse_budget_kind(r.budget_kind);
  budget->value = r.budget.value_or(options.default_budget);
  if (budget->kind == route::BudgetKind::Quality)
    budget->quality = route::parse_quality_target(r.quality_target, "budget");
  const auto kind = route::parse_router_kind(r.router);
  route::check_budget(*budget, "budget");
  const bool full_width = budget->kind == route::BudgetKind::Latency && budget->value == 1.0 &&
                          kind != route::RouterKind::Dynamic;
  if (full_width && !std::filesystem::exists(dir / route::kLatencyFile)) return nullptr;
  const std::string key = r.router + "|" + r.budget_kind + "|" + budget_label(*budget);
  if (kind != route::RouterKind::Dynamic) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
  }
  auto plan = std::make_shared<route::BudgetPlan>(
      route::plan_budget(dir, *loaded.model, loaded.space, *budget, kind));
  if (kind != route::RouterKind::Dynamic) {
    std::lock_guard<std::mutex> lock(mutex);
    plans.emplace(key, plan);
  }
  return plan;
}

json Server::Impl::flextron_object(const JobSpec& spec, const JobOutcome& o) const {
  const auto& config = loaded.model->config();
  json j;
  if (spec.plan) {
    j = spec.plan->to_json(config);
  } else {
    j = {{"router", "full"},
         {"budget", 1.0},
         {"budget_kind", "latency"},
         {"architecture", model::architecture_to_json(model::full_architecture(config))},
         {"architecture_summary", model::describe_architecture({}, config)},
         {"predicted_latency_fraction", 1.0}};
  }
  const double decode_wall = seconds(o.finished - o.first_token);
  // Per token decoded (a speculative step decodes several).
  const double steps = static_cast<double>(std::max(o.decode_steps, o.decoded_tokens));
  j["measured"] = {
      {"queue_ms", 1e3 * seconds(o.started - o.submitted)},
      {"time_to_first_token_ms",
       o.completion_tokens > 0 ? 1e3 * seconds(o.first_token - o.submitted) : 0.0},
      {"decode_ms_per_token", o.decode_steps > 0 ? 1e3 * decode_wall / steps : 0.0},
      {"tokens_per_second", o.decode_steps > 0 && decode_wall > 0 ? steps / decode_wall : 0.0},
      {"engine_ms_per_token", o.decode_steps > 0 ? 1e3 * o.decode_seconds / steps : 0.0},
      {"mean_batch_size", o.decode_steps > 0 ? o.batch_rows / o.decode_steps : 0.0}};
  if (o.speculative)
    j["speculative"] = {{"draft", draft_label},
                        {"rounds", o.speculative->rounds},
                        {"acceptance_rate", o.speculative->acceptance_rate()},
                        {"tokens_per_round", o.speculative->tokens_per_round()}};
  return j;
}

bool Server::Impl::read_body(const httplib::ContentReader& reader, httplib::Response& res,
                             std::string& body) {
  // httplib holds a Content-Length to its payload limit (status 413 before any byte is read) but
  // would read a chunked body whole: the limit is kept here, chunk by chunk.
  bool too_large = false;
  const bool read = reader([&](const char* data, size_t n) {
    if (n > options.max_body_bytes - body.size()) {
      too_large = true;
      return false;
    }
    body.append(data, n);
    return true;
  });
  if (read) return true;
  const int status = too_large || res.status == 413 ? 413 : 400;
  send_json(res, status,
            error_body(status == 413 ? "request body is larger than the server's limit of " +
                                           std::to_string(options.max_body_bytes) + " bytes"
                                     : "request body could not be read (malformed chunked "
                                       "encoding or the client went away)",
                       "invalid_request_error", "", status));
  // The rest of the body may still be on its way: this connection cannot carry another request.
  res.set_header("Connection", "close");
  return false;
}

std::vector<int64_t> Server::Impl::prompt_tokens(const Prompt& prompt, const std::string& where,
                                                 bool chat_prompt) {
  const auto& config = loaded.model->config();
  const auto& tokenizer = *loaded.tokenizer;
  std::vector<int64_t> tokens;
  if (!prompt.is_tokens) {
    // A chat prompt's template markers are its special tokens, whatever the tokenizer makes of
    // their text.
    tokens = chat_prompt ? text::encode_with_specials(tokenizer, prompt.text, chat_specials)
                         : tokenizer.encode(prompt.text, /*add_bos=*/true);
  } else {
    const int64_t vocab = tokenizer.vocab_size();
    // BOS first, as encoding text puts it, unless the ids already start with it.
    if (prompt.tokens.empty() || prompt.tokens.front() != tokenizer.bos_id())
      tokens.push_back(tokenizer.bos_id());
    for (size_t i = 0; i < prompt.tokens.size(); ++i) {
      if (prompt.tokens[i] >= vocab)
        throw ApiError(400,
                       "'" + where + "' token " + std::to_string(i) + " is " +
                           std::to_string(prompt.tokens[i]) + ", outside the vocabulary of " +
                           std::to_string(vocab),
                       where);
      tokens.push_back(prompt.tokens[i]);
    }
  }
  try {
    runtime::check_prompt_fits(config, static_cast<int64_t>(tokens.size()), where);
  } catch (const Error& e) {
    throw ApiError(400, e.what(), where);
  }
  return tokens;
}

std::shared_ptr<const runtime::TokenConstraint> Server::Impl::output_constraint(
    const CompletionRequest& request, const std::vector<std::vector<int64_t>>& prompts,
    bool is_chat) const {
  std::shared_ptr<runtime::JsonConstraint> constraint;
  try {
    constraint = std::make_shared<runtime::JsonConstraint>(vocabulary, request.output_grammar,
                                                           "response_format");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), "response_format");
  }
  const char* max_field = is_chat ? "max_completion_tokens" : "max_tokens";
  try {
    constraint->check_room(request.max_tokens, "'" + std::string(max_field) + "'");
  } catch (const Error& e) {
    throw ApiError(400, e.what(), max_field);
  }
  const int64_t needed = constraint->min_tokens() + 1;
  const int64_t context = loaded.model->config().max_position_embeddings;
  for (const auto& p : prompts)
    if (static_cast<int64_t>(p.size()) + needed > context + 1)
      throw ApiError(400,
                     "the prompt leaves " +
                         std::to_string(context + 1 - static_cast<int64_t>(p.size())) +
                         " positions of the model's context, response_format's shortest output "
                         "takes " +
                         std::to_string(needed),
                     is_chat ? "messages" : "prompt");
  return constraint;
}

void Server::Impl::completion(const std::string& body, httplib::Response& res, Endpoint endpoint) {
  const bool is_chat = endpoint == Endpoint::ChatCompletions;
  CompletionRequest request;
  JobSpec spec;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> echoes;  // each prompt's text, when echoed
  bool dynamic = false;
  auto plan = [&] {
    route::Budget budget;
    try {
      spec.plan = plan_for(request, &budget);
    } catch (const Error& e) {
      if (!std::filesystem::exists(dir / route::kLatencyFile))
        throw ApiError(400, route::missing_latency_table_message(), "budget");
      throw ApiError(400, e.what(), "budget");
    }
    return budget;
  };
  try {
    request = parse_completion_request(body, endpoint, chat);
    const auto budget = plan();
    dynamic = spec.plan && spec.plan->kind == route::RouterKind::Dynamic;
    spec.budget_label = spec.plan ? budget_label(budget) : "full";
    spec.router_label = spec.plan ? route::router_kind_name(spec.plan->kind) : "full";
    for (size_t i = 0; i < request.prompts.size(); ++i) {
      const auto& p = request.prompts[i];
      const std::string where = is_chat                       ? std::string("messages")
                                : request.prompts.size() == 1 ? std::string("prompt")
                                                              : "prompt[" + std::to_string(i) + "]";
      prompts.push_back(prompt_tokens(p, where, is_chat));
      if (request.echo) echoes.push_back(p.is_tokens ? loaded.tokenizer->decode(p.tokens) : p.text);
    }
    spec.max_tokens = request.max_tokens;
    spec.sampling = request.sampling;
    spec.logprobs = request.logprobs;
    if (!request.seed_given) {
      std::lock_guard<std::mutex> lock(mutex);
      spec.sampling.seed = seeds();
    }
    spec.stop = request.stop;
    if (is_chat) spec.stop_ids = chat_stop_ids;
    if (request.output_grammar) spec.constraint = output_constraint(request, prompts, is_chat);
    spec.speculative = request.speculative.value_or(options.speculative) && !dynamic;
    if (request.speculative.value_or(false)) {
      if (!engine.has_draft())
        throw ApiError(400, "this server was started without --speculative", "speculative");
      if (dynamic)
        throw ApiError(400, "a dynamic router's widths change per token: no draft verifies them",
                       "speculative");
    }
  } catch (const ApiError& e) {
    return send_error(res, e);
  }

  // Choice i*n + j is prompt i's j-th. Static plans fork the n choices from one prefill; a
  // dynamic router keeps per-sequence state, so each of its choices gets a plan of its own.
  std::vector<std::shared_ptr<Job>> jobs;
  try {
    for (auto& tokens : prompts) {
      spec.prompt_tokens = tokens;
      if (!dynamic) {
        for (auto& job : engine.submit_choices(spec, request.n)) jobs.push_back(job);
        continue;
      }
      for (int64_t j = 0; j < request.n; ++j) {
        JobSpec choice = spec;
        choice.sampling.seed = spec.sampling.seed + static_cast<uint64_t>(j);
        if (j > 0) {
          plan();
          choice.plan = spec.plan;
        }
        jobs.push_back(engine.submit(choice));
      }
    }
  } catch (const ApiError& e) {
    for (auto& job : jobs) job->cancel();
    return send_error(res, e);
  }
  metrics.add_in_flight(1);
  auto result = std::make_shared<CompletionResult>();
  result->id = std::string(is_chat ? "chatcmpl-" : "cmpl-") + std::to_string(started_at) + "-" +
               std::to_string(++requests);
  result->created = static_cast<int64_t>(std::time(nullptr));
  result->model = options.model_name;
  result->choices.resize(jobs.size());
  for (const auto& tokens : prompts) result->prompt_tokens += static_cast<int64_t>(tokens.size());
  // A finished choice's outcome into the result: its finish reason, the token count, and (from
  // the first to finish: they share the plan) the flextron object. Returns the engine's error.
  auto complete = [this, jobs, result](size_t i) {
    const auto o = jobs[i]->outcome();
    result->choices[i].finish_reason = finish_reason(o.stop_reason);
    result->completion_tokens += o.completion_tokens;
    if (result->flextron.is_null()) result->flextron = flextron_object(jobs[i]->spec(), o);
    return o.error;
  };
  auto logprobs_json = [endpoint](const std::vector<runtime::TokenLogprob>& tokens, size_t offset) {
    return endpoint == Endpoint::ChatCompletions ? chat_logprobs(tokens)
                                                 : completion_logprobs(tokens, offset);
  };
  const size_t n = static_cast<size_t>(request.n);
  auto echo_of = [echoes, n](size_t i) {
    return echoes.empty() ? std::string() : echoes[i / n];
  };

  if (!request.stream) {
    std::string error;
    for (size_t i = 0; i < jobs.size(); ++i) {
      std::string text;
      std::vector<runtime::TokenLogprob> tokens;
      while (!jobs[i]->wait(text, tokens, std::chrono::milliseconds(1000))) {
      }
      auto& choice = result->choices[i];
      choice.text = echo_of(i) + text;
      if (request.logprobs >= 0) {
        tokens.resize(tokens_within(tokens, text.size()));  // none past a stop string's cut
        choice.logprobs = logprobs_json(tokens, 0);
      }
      const auto e = complete(i);
      if (error.empty()) error = e;
    }
    metrics.add_in_flight(-1);
    if (!error.empty())
      return send_error(res, ApiError(500, "generation failed: " + error, "", "server_error"));
    return send_json(res, 200, completion_response(endpoint, *result));
  }

  // Server-Sent Events: per choice, a chunk per piece of text (its tokens' log-probabilities
  // with it), the last with finish_reason and the flextron object; with include_usage a chunk of
  // usage and no choices; then [DONE]. A write that fails means the client left: the jobs are
  // cancelled, and the releaser (always called) takes the request out of the in-flight count.
  struct ChoiceStream {
    bool first = true, done = false;
    size_t emitted = 0;      // bytes of text sent (the echoed prompt's too)
    size_t token_bytes = 0;  // bytes of the tokens whose log-probabilities were sent
    std::vector<runtime::TokenLogprob> tokens;  // not yet sent
  };
  auto streams = std::make_shared<std::vector<ChoiceStream>>(jobs.size());
  auto last_write = std::make_shared<Clock::time_point>(Clock::now());
  const bool want_logprobs = request.logprobs >= 0, include_usage = request.include_usage;
  res.set_chunked_content_provider(
      "text/event-stream",
      [jobs, endpoint, result, streams, last_write, complete, logprobs_json, echo_of, want_logprobs,
       include_usage](size_t, httplib::DataSink& sink) {
        auto send = [&](const std::string& event) {
          if (sink.write(event.data(), event.size())) {
            *last_write = Clock::now();
            return true;
          }
          for (auto& job : jobs) job->cancel();
          return false;
        };
        auto event = [](const json& j) {
          return "data: " + dump(j) + "\n\n";
        };
        // One job waited on at a time: a single choice for up to a second, several in turns.
        const auto wait = std::chrono::milliseconds(jobs.size() == 1 ? 1000 : 20);
        bool all_done = true;
        for (size_t i = 0; i < jobs.size(); ++i) {
          auto& st = (*streams)[i];
          if (st.done) continue;
          std::string text;
          const bool done = jobs[i]->wait(text, st.tokens, wait);
          if (st.first) text = echo_of(i) + text;
          const size_t total = st.emitted + text.size();
          // The log-probabilities of the tokens that start within the text sent so far.
          auto sent_tokens = [&] {
            if (!want_logprobs) return json(nullptr);
            const size_t echo = echo_of(i).size();
            const size_t completion = total > echo ? total - echo : 0;
            const size_t k = tokens_within(
                st.tokens, completion > st.token_bytes ? completion - st.token_bytes : 0);
            std::vector<runtime::TokenLogprob> sent(st.tokens.begin(), st.tokens.begin() + k);
            st.tokens.erase(st.tokens.begin(), st.tokens.begin() + k);
            const json j = logprobs_json(sent, echo + st.token_bytes);
            for (const auto& t : sent) st.token_bytes += t.token.piece.size();
            return j;
          };
          if (!done && (!text.empty() || st.first)) {
            if (!send(event(
                    completion_chunk(endpoint, *result, i, text, sent_tokens(), st.first, false))))
              return false;
            st.first = false;
            st.emitted = total;
          }
          if (!done) {
            all_done = false;
            continue;
          }
          st.done = true;
          const auto error = complete(i);
          if (!error.empty()) {
            for (auto& job : jobs) job->cancel();
            if (!send(event(error_body("generation failed: " + error, "server_error", "", 500)) +
                      "data: [DONE]\n\n"))
              return false;
            sink.done();
            return true;
          }
          const json logprobs = sent_tokens();
          if (!send(event(completion_chunk(endpoint, *result, i, text, logprobs, st.first, true))))
            return false;
          st.first = false;
        }
        if (!all_done) {
          if (Clock::now() - *last_write > std::chrono::seconds(1) && !send(": keep-alive\n\n"))
            return false;
          return true;
        }
        if (include_usage && !send(event(usage_chunk(endpoint, *result)))) return false;
        if (!send("data: [DONE]\n\n")) return false;
        sink.done();
        return true;
      },
      [this, jobs](bool) {
        for (auto& job : jobs) job->cancel();  // no-op for the finished ones
        metrics.add_in_flight(-1);
      });
  res.set_header("Cache-Control", "no-cache");
}

// llama-server's shapes: {"content", "add_special"?, "with_pieces"?} -> {"tokens": [id, ...]}
// or, with pieces, {"tokens": [{"id", "piece"}, ...]}; {"tokens": [...]} -> {"content"}.
void Server::Impl::tokenize(const std::string& body, httplib::Response& res) const {
  try {
    const auto request = parse_tokenize_request(body);
    const auto ids = loaded.tokenizer->encode(request.content, request.add_special);
    json tokens = json::array();
    int64_t prev = loaded.tokenizer->bos_id();
    for (int64_t id : ids) {
      if (request.with_pieces)
        tokens.push_back({{"id", id}, {"piece", loaded.tokenizer->decode_piece(prev, id)}});
      else
        tokens.push_back(id);
      prev = id;
    }
    send_json(res, 200, {{"tokens", tokens}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

void Server::Impl::detokenize(const std::string& body, httplib::Response& res) const {
  try {
    const auto ids = parse_detokenize_request(body, loaded.tokenizer->vocab_size());
    send_json(res, 200, {{"content", loaded.tokenizer->decode(ids)}});
  } catch (const ApiError& e) {
    send_error(res, e);
  }
}

json Server::Impl::model_object() const {
  const auto& config = loaded.model->config();
  json info = {{"context_length", config.max_position_embeddings},
               {"parameters", loaded.model->parameter_count()},
               {"default_budget", options.default_budget}};
  json routers = json::array();
  if (std::filesystem::exists(dir / route::kLatencyFile)) {
    // What budgets can reach on this table, and the machine it was measured on.
    const auto table = route::load_latency_table(dir / route::kLatencyFile, config, loaded.space);
    const double smallest = route::smallest_latency_fraction(table);
    const int serving = at::get_num_threads();
    const int profiled = table.hardware.value("threads", serving);
    if (profiled != serving)
      std::fprintf(stderr,
                   "serve: warning: the latency table was profiled at %d threads and this server "
                   "runs %d: budgets may not keep their latency fractions (re-run `flextron "
                   "profile --threads %d`)\n",
                   profiled, serving, serving);
    info["serving_threads"] = serving;
    info["latency_table"] = {{"hardware", table.hardware},
                             {"contexts", table.contexts},
                             {"reachable_latency_budgets", {std::ceil(smallest * 100) / 100, 1.0}}};
    routers.push_back("uniform");
    if (std::filesystem::exists(dir / route::kRouterFile)) {
      auto bundle = route::load_routers(dir, config, loaded.space);
      routers.push_back("static");
      if (bundle.dynamic) routers.push_back("dynamic");
      json grid = json::array();
      // Rounded: the table stores budgets as computed (0.7000000000000001).
      for (const auto& entry : bundle.table) grid.push_back(std::round(entry.budget * 1e4) / 1e4);
      info["budget_grid"] = grid;
    }
  }
  info["routers"] = routers;
  info["chat_template"] = text::chat_format_name(chat.format);
  // created: when the model directory's weights were written (Unix seconds), else start time.
  int64_t created = started_at;
  std::error_code ec;
  const auto written = std::filesystem::last_write_time(dir / "config.json", ec);
  if (!ec)
    created = std::chrono::duration_cast<std::chrono::seconds>(
                  written - std::filesystem::file_time_type::clock::now() +
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  return {{"id", options.model_name},
          {"object", "model"},
          {"created", created},
          {"owned_by", "flextron"},
          {"flextron", info}};
}

void Server::Impl::routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (ConnectionThreads::over_limit()) {
      res.set_header("Retry-After", "1");
      res.set_header("Connection", "close");
      send_json(res, 503,
                error_body("the server has " + std::to_string(options.max_connections) +
                               " connections open, its limit (--max-connections); retry later",
                           "server_error", "", 503));
      return httplib::Server::HandlerResponse::Handled;
    }
    return authorized(req, res) ? httplib::Server::HandlerResponse::Unhandled
                                : httplib::Server::HandlerResponse::Handled;
  });
  // Statuses httplib answers itself (404 unknown path, 413 body too large, 400 unparsable
  // request) get OpenAI's error body too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req,
                                                                 httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 404) message = "no such endpoint: " + req.method + " " + req.path;
    if (res.status == 413) message = "request body is larger than the server's limit";
    if (res.status == 405) message = "method not allowed: " + req.method + " " + req.path;
    send_json(res, res.status,
              error_body(message, res.status == 404 ? "not_found_error" : "invalid_request_error",
                         "", res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_json(res, 500, error_body(message, "server_error", "", 500));
      });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_request(path_label(req.path), res.status);
    if (options.access_log)
      std::fprintf(stderr, "serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });

  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (stopping) return send_json(res, 503, {{"status", "shutting_down"}});
    send_json(res, 200, {{"status", "ok"}, {"runtime", engine.runtime()}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(), "text/plain; version=0.0.4");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_body})}});
  });
  // models.retrieve: the served model by its id (any other id is OpenAI's 404).
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id == options.model_name) return send_json(res, 200, model_body);
    send_json(res, 404,
              error_body("The model '" + id + "' does not exist (this server serves '" +
                             options.model_name + "')",
                         "invalid_request_error", "model", 404));
  });
  auto post = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request&, httplib::Response& res,
                            const httplib::ContentReader& reader) {
      std::string body;
      if (read_body(reader, res, body)) completion(body, res, endpoint);
    };
  };
  http.Post("/v1/completions", post(Endpoint::Completions));
  http.Post("/tokenize", [this](const httplib::Request&, httplib::Response& res,
                                const httplib::ContentReader& reader) {
    std::string body;
    if (read_body(reader, res, body)) tokenize(body, res);
  });
  http.Post("/detokenize", [this](const httplib::Request&, httplib::Response& res,
                                  const httplib::ContentReader& reader) {
    std::string body;
    if (read_body(reader, res, body)) detokenize(body, res);
  });
  http.Post("/v1/chat/completions", post(Endpoint::ChatCompletions));
}

// ---------------------------------------------------------------------------------------------
Server::Server(const std::filesystem::path& model_dir, io::LoadedModel& loaded,
               const ServerOptions& options) {
  if (!loaded.tokenizer) fail(model_dir, "no tokenizer in this model directory: cannot serve text");
  if (options.engine.max_batch < 1) fail("--max-batch", "must be >= 1");
  if (options.engine.max_active < 1) fail("--max-active", "must be >= 1");
  if (options.engine.max_queue < 0) fail("--max-queue", "must be >= 0");
  if (options.max_connections < 1) fail("--max-connections", "must be >= 1");
  if (options.max_body_bytes < 1) fail("--max-body", "must be >= 1");
  if (options.read_timeout.count() < 1) fail("--timeout", "must be at least 1 second");
  if (options.idle_timeout.count() < 1) fail("--idle-timeout", "must be at least 1 second");
  // Budgets are planned on the model's latency table: it must be this server's weight format.
  route::check_latency_weights(model_dir, runtime::qk::format_name(runtime::qk::parse_format(
                                              options.engine.quant, "--quant")));
  route::check_budget({options.default_budget, route::BudgetKind::Latency}, "--default-budget");
  // A client that goes away mid-stream must fail a write, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  auto opts = options;
  if (opts.model_name.empty())
    opts.model_name = std::filesystem::absolute(model_dir).lexically_normal().filename().string();
  if (opts.model_name.empty()) opts.model_name = "flextron";
  impl_ = std::make_unique<Impl>(model_dir, loaded, opts);
  if (opts.speculative) {
    auto* fast = impl_->engine.fast_engine();
    if (fast == nullptr) fail("--speculative", "runs on the fast runtime (this server runs torch)");
    const auto draft = route::pick_draft(opts.draft, model_dir, *loaded.model, loaded.space, *fast,
                                         *loaded.tokenizer, {}, opts.draft_tokens);
    impl_->engine.set_draft({draft.chosen.arch, opts.draft_tokens});
    impl_->draft_label = draft.chosen.label;
    std::fprintf(stderr, "speculative decoding: draft %s (%s)\n", draft.chosen.label.c_str(),
                 model::describe_architecture(draft.chosen.arch, loaded.model->config()).c_str());
  }
  // The chat template: the tokenizer's (tokenizer_config.json, GGUF) or the directory's
  // chat_template.jinja, recognised; ours when there is none.
  std::string jinja = loaded.tokenizer->chat_template();
  auto where = model_dir / "tokenizer_config.json";
  if (jinja.empty() && std::filesystem::is_regular_file(model_dir / "chat_template.jinja")) {
    where = model_dir / "chat_template.jinja";
    jinja = io::read_file(where);
  }
  impl_->chat.format = text::resolve_chat_format(opts.chat_template, jinja, where.string());
  impl_->chat.default_system = text::default_system_message(jinja);
  impl_->chat_specials =
      text::find_special_tokens(*loaded.tokenizer, text::chat_special_tokens(impl_->chat.format));
  const auto stops = text::render_chat(impl_->chat.format, {{"user", ""}}).stop;
  for (const auto& [marker, id] : impl_->chat_specials)
    if (std::find(stops.begin(), stops.end(), marker) != stops.end())
      impl_->chat_stop_ids.push_back(id);
  // Every connection its own thread (serve/connections.h), so idle and slow clients never
  // queue /health or a request behind them; requests beyond the engine's slots and queue are
  // answered 503 by the engine, connections beyond max_connections by the pre-routing handler.
  const size_t max_connections = opts.max_connections;
  impl_->http.new_task_queue = [max_connections] {
    return new ConnectionThreads(max_connections, 64);
  };
  impl_->http.set_payload_max_length(opts.max_body_bytes);
  impl_->http.set_read_timeout(static_cast<time_t>(opts.read_timeout.count()), 0);
  impl_->http.set_write_timeout(static_cast<time_t>(opts.read_timeout.count()), 0);
  impl_->http.set_keep_alive_timeout(static_cast<time_t>(opts.idle_timeout.count()));
  // httplib listens with a backlog of 5: a burst of clients connecting at once overflows it and
  // some of them fail to read a response. Remember the socket to deepen the backlog after bind.
  // SO_REUSEADDR only (httplib's default adds SO_REUSEPORT, which would let a second server
  // silently share the port instead of reporting it in use).
  impl_->http.set_socket_options([impl = impl_.get()](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    impl->listen_socket = sock;
  });
  impl_->model_body = impl_->model_object();
  impl_->routes();
}

Server::~Server() {
  stop();
}

int Server::bind() {
  auto& o = impl_->options;
  int port = o.port;
  if (o.port == 0) {
    port = impl_->http.bind_to_any_port(o.host);
    if (port < 0) fail("--host", "cannot bind " + o.host + " to a free port");
  } else if (!impl_->http.bind_to_port(o.host, o.port)) {
    fail("--port", "cannot bind " + o.host + ":" + std::to_string(o.port) +
                       " (in use, or not an address of this machine)");
  }
  if (impl_->listen_socket >= 0) ::listen(impl_->listen_socket, SOMAXCONN);
  return port;
}

void Server::run() {
  impl_->http.listen_after_bind();
}

void Server::stop() {
  std::call_once(impl_->stopped, [this] {
    impl_->stopping = true;
    const auto deadline = std::chrono::steady_clock::now() + impl_->options.shutdown_grace;
    impl_->engine.shutdown(impl_->options.shutdown_grace);
    // The engine has finished its jobs, but their HTTP handlers may still be writing the last
    // chunks: httplib ends chunked responses as soon as it stops, so wait for them (within the
    // same grace) before closing.
    while (impl_->metrics.in_flight() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    impl_->http.stop();
  });
}

std::string Server::chat_template() const {
  return text::chat_format_name(impl_->chat.format);
}

const char* Server::runtime() const {
  return impl_->engine.runtime();
}

Metrics& Server::metrics() {
  return impl_->metrics;
}

}  // namespace flextron::serve
