// The server against real HTTP on an ephemeral loopback port, on stories260K with trained
// static and dynamic routers: concurrent requests at budgets 0.5 and 1.0 (completions and chat,
// streamed and not) give exactly `flextron generate`'s greedy text; bad requests get OpenAI-style
// errors with the right status and the server keeps serving; a client that leaves mid-stream
// stops its generation; the API key, the bounded queue and a clean stop.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <future>
#include <regex>
#include <set>
#include <thread>

#include <httplib.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/model_dir.h"
#include "serve/api.h"
#include "serve/server.h"
#include "test_util.h"
#include "text/chat_template.h"
#include "tools/cli_fixtures.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::quote;
using flextron::testing::run_cli;
using nlohmann::json;

// A server on a free loopback port, serving from a thread until destroyed.
struct LiveServer {
  LiveServer(const fs::path& dir, flextron::serve::ServerOptions options)
      : loaded(flextron::io::load_model_dir(dir)) {
    options.port = 0;
    options.access_log = false;
    server = std::make_unique<flextron::serve::Server>(dir, loaded, options);
    port = server->bind();
    thread = std::thread([this] { server->run(); });
  }
  ~LiveServer() {
    server->stop();
    thread.join();
  }
  httplib::Client client(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }
  flextron::io::LoadedModel loaded;
  std::unique_ptr<flextron::serve::Server> server;
  int port = 0;
  std::thread thread;
};

struct Reply {
  int status = 0;
  json body;
  std::string text;  // the completion's text (streams: the chunks' text joined)
  json flextron;
  std::string retry_after;
};

// The data events of a stream, parsed ("[DONE]" checked and left out).
std::vector<json> events(const std::string& raw) {
  std::vector<json> out;
  std::regex event("data: (.*)\n\n");
  bool done = false;
  for (std::sregex_iterator it(raw.begin(), raw.end(), event), end; it != end; ++it) {
    const std::string data = (*it)[1];
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    EXPECT_FALSE(done) << "an event after [DONE]";
    out.push_back(json::parse(data));
  }
  EXPECT_TRUE(done) << raw;
  return out;
}

// POSTs `body` to `path`; a stream is read event by event and reassembled.
Reply post(const LiveServer& s, const std::string& path, const json& body,
           const std::string& key = "") {
  auto c = s.client(key);
  Reply r;
  auto res = c.Post(path, body.dump(), "application/json");
  if (!res) {
    r.body = {{"client_error", httplib::to_string(res.error())}};
    return r;
  }
  r.status = res->status;
  r.retry_after = res->get_header_value("Retry-After");
  if (!body.value("stream", false) || res->status != 200) {
    r.body = json::parse(res->body, nullptr, false);
    if (r.status == 200) {
      const auto& choice = r.body["choices"][0];
      r.text = choice.contains("message") ? choice["message"]["content"].get<std::string>()
                                          : choice["text"].get<std::string>();
      r.flextron = r.body["flextron"];
    }
    return r;
  }
  for (const auto& chunk : events(res->body)) {
    const auto& choice = chunk["choices"][0];
    if (choice.contains("delta"))
      r.text += choice["delta"].value("content", "");
    else
      r.text += choice["text"].get<std::string>();
    if (chunk.contains("flextron")) r.flextron = chunk["flextron"];
  }
  return r;
}

// `flextron generate`'s text for the same model, prompt and budget (greedy by default).
std::string generate_text(const fs::path& model, const std::string& prompt, double budget,
                          int max_tokens, const std::string& sampling = "--temperature 0") {
  auto r = run_cli("generate --model " + quote(model) + " --prompt " + quote(prompt) +
                   " --budget " + std::to_string(budget) + " " + sampling + " --max-tokens " +
                   std::to_string(max_tokens) + " --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out)["text"].get<std::string>() : "";
}

// A metric's value from /metrics text (first series whose line starts with `series`).
double metric(const LiveServer& s, const std::string& series) {
  auto res = s.client().Get("/metrics");
  if (!res) return -1;
  std::istringstream lines(res->body);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return 0;
}

void expect_error(const Reply& r, int status, const std::string& what) {
  EXPECT_EQ(r.status, status) << r.body.dump();
  ASSERT_TRUE(r.body.contains("error")) << r.body.dump();
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find(what), std::string::npos)
      << r.body.dump();
  EXPECT_TRUE(r.body["error"].contains("type"));
}

TEST(Server, BudgetsConcurrencyErrorsAndShutdown) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::build_routed_stories(dir).routed;
  ASSERT_TRUE(fs::exists(model / "router.json"));
  const int kTokens = 40;
  const std::string prompt = "Once upon a time";
  std::vector<std::string> chat_stops;
  const std::string chat_prompt = flextron::serve::render_chat(
      json::array({{{"role", "user"}, {"content", "Tell me a story."}}}), &chat_stops);
  const std::map<double, std::string> expected = {
      {0.5, generate_text(model, prompt, 0.5, kTokens)},
      {1.0, generate_text(model, prompt, 1.0, kTokens)}};
  const std::map<double, std::string> expected_chat = {
      {0.5, generate_text(model, chat_prompt, 0.5, kTokens)},
      {1.0, generate_text(model, chat_prompt, 1.0, kTokens)}};
  ASSERT_NE(expected.at(0.5), expected.at(1.0)) << "budgets should differ on this model";

  flextron::serve::ServerOptions options;
  options.max_body_bytes = 64 * 1024;
  options.engine.max_batch = 4;
  LiveServer s(model, options);

  {
    SCOPED_TRACE("completions and chat, streamed and not, at 0.5 and 1.0 at the same time");
    struct Case {
      std::string path;
      bool stream;
      double budget;
    };
    std::vector<Case> cases;
    for (int copy = 0; copy < 2; ++copy)  // two of each budget and kind: some decode batched
      for (double budget : {0.5, 1.0})
        for (bool stream : {false, true})
          for (const char* path : {"/v1/completions", "/v1/chat/completions"})
            cases.push_back({path, stream, budget});
    std::vector<std::future<Reply>> replies;
    for (const auto& c : cases) {
      json body = {{"max_tokens", kTokens},
                   {"temperature", 0},
                   {"stream", c.stream},
                   {"budget", c.budget},
                   {"model", "stories"}};
      if (c.path == "/v1/completions")
        body["prompt"] = prompt;
      else
        body["messages"] = json::array({{{"role", "user"}, {"content", "Tell me a story."}}});
      replies.push_back(
          std::async(std::launch::async, [&s, c, body] { return post(s, c.path, body); }));
    }
    double batched = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto r = replies[i].get();
      const auto& c = cases[i];
      SCOPED_TRACE(c.path + (c.stream ? " stream" : "") + " budget " + std::to_string(c.budget));
      ASSERT_EQ(r.status, 200) << r.body.dump();
      if (c.path == "/v1/completions") {
        EXPECT_EQ(r.text, expected.at(c.budget));
      } else {
        // The chat template's turn markers are stop strings: the text is generate's, cut there.
        const auto& full = expected_chat.at(c.budget);
        ASSERT_EQ(full.compare(0, r.text.size(), r.text), 0) << r.text << " vs " << full;
        if (r.text.size() < full.size()) {
          const auto rest = full.substr(r.text.size());
          EXPECT_TRUE(rest.rfind("\nUser:", 0) == 0 || rest.rfind("\nAssistant:", 0) == 0) << rest;
        }
      }
      ASSERT_TRUE(r.flextron.is_object());
      EXPECT_EQ(r.flextron["budget"].get<double>(), c.budget);
      EXPECT_EQ(r.flextron["router"], "static");
      EXPECT_LE(r.flextron["predicted_latency_fraction"].get<double>(), c.budget + 1e-9);
      EXPECT_GT(r.flextron["measured"]["tokens_per_second"].get<double>(), 0.0);
      batched = std::max(batched, r.flextron["measured"]["mean_batch_size"].get<double>());
    }
    // Eight requests share each architecture; the scheduler decodes some of them together.
    EXPECT_GT(batched, 1.0);
  }
  {
    SCOPED_TRACE("dynamic router and uniform widths");
    auto r = post(s, "/v1/completions",
                  {{"prompt", prompt}, {"max_tokens", 8}, {"budget", 0.6}, {"router", "dynamic"}});
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.flextron["router"], "dynamic");
    EXPECT_TRUE(r.flextron.contains("dynamic_mean_mlp_widths")) << r.flextron.dump();
    r = post(s, "/v1/completions",
             {{"prompt", prompt}, {"max_tokens", 8}, {"budget", 0.6}, {"router", "uniform"}});
    ASSERT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.flextron["router"], "uniform");
  }
  {
    SCOPED_TRACE("/v1/models: routers, the rounded budget grid, the reachable budget range");
    auto info = json::parse(s.client().Get("/v1/models")->body)["data"][0]["flextron"];
    EXPECT_EQ(info["routers"], json({"uniform", "static", "dynamic"})) << info.dump();
    for (const auto& b : info["budget_grid"]) {
      const double v = b.get<double>();
      EXPECT_EQ(v, std::round(v * 1e4) / 1e4) << info["budget_grid"].dump();
    }
    const auto& range = info["latency_table"]["reachable_latency_budgets"];
    ASSERT_EQ(range.size(), 2u) << info.dump();
    EXPECT_GT(range[0].get<double>(), 0.0);
    EXPECT_LT(range[0].get<double>(), 0.5);  // budget 0.5 is served above
    EXPECT_EQ(range[1].get<double>(), 1.0);
    EXPECT_TRUE(info["latency_table"].contains("hardware"));  // (this fixture's is synthetic)
    EXPECT_GE(info["serving_threads"].get<int>(), 1);
    // Below the range: a 400 that names the smallest reachable budget.
    auto low =
        post(s, "/v1/completions", {{"prompt", "x"}, {"budget", range[0].get<double>() / 2}});
    EXPECT_EQ(low.status, 400) << low.body.dump();
  }
  {
    SCOPED_TRACE("bad requests");
    auto c = s.client();
    auto raw = c.Post("/v1/completions", "{\"prompt\": ", "application/json");
    ASSERT_TRUE(raw);
    EXPECT_EQ(raw->status, 400);
    EXPECT_NE(raw->body.find("not valid JSON"), std::string::npos) << raw->body;
    expect_error(post(s, "/v1/completions", {{"max_tokens", 4}}), 400, "'prompt' is required");
    expect_error(post(s, "/v1/chat/completions", {{"prompt", "x"}}), 400, "'messages'");
    expect_error(post(s, "/v1/completions", {{"prompt", "x"}, {"budget", 1.5}}), 400, "<= 1");
    expect_error(post(s, "/v1/completions", {{"prompt", "x"}, {"budget", 0.05}}), 400,
                 "smallest achievable");
    expect_error(post(s, "/v1/completions", {{"prompt", "x"}, {"router", "psychic"}}), 400,
                 "static");
    // Quality targets: the full model's own loss is the full model; bad targets are 400s.
    auto q = post(
        s, "/v1/completions",
        {{"prompt", prompt}, {"max_tokens", kTokens}, {"temperature", 0}, {"budget", "ppl+0%"}});
    ASSERT_EQ(q.status, 200) << q.body.dump();
    EXPECT_EQ(q.text, expected.at(1.0));
    EXPECT_EQ(q.flextron["budget_kind"], "quality");
    EXPECT_EQ(q.flextron["budget"], "ppl+0%");
    expect_error(post(s, "/v1/completions", {{"prompt", "x"}, {"budget", "ppl+x"}}), 400,
                 "is not a number");
    expect_error(post(s, "/v1/completions", {{"prompt", "x"}, {"budget", "ppl<=1.01"}}), 400,
                 "best achievable is the full model");
    expect_error(
        post(s, "/v1/completions", {{"prompt", "x"}, {"budget", 0.5}, {"budget_kind", "quality"}}),
        400, "a quality budget is a target");
    expect_error(post(s, "/v1/completions",
                      {{"prompt", "x"}, {"budget", "ppl+2%"}, {"budget_kind", "latency"}}),
                 400, "must be a number");
    std::string long_prompt;
    for (int i = 0; i < 300; ++i) long_prompt += "Once upon a time ";
    expect_error(post(s, "/v1/completions", {{"prompt", long_prompt}}), 400,
                 "do not fit the model's context of 512");
    expect_error(post(s, "/v1/completions", {{"prompt", std::string(100 * 1024, 'a')}}), 413,
                 "larger than");
    auto missing = c.Get("/v1/nothing");
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
    EXPECT_NE(missing->body.find("\"error\""), std::string::npos);
    auto health = c.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);  // still serving
    // A Llama model on the CPU: its static and uniform jobs ran on the fast runtime (batched
    // there), the dynamic router's on the torch forward, all with generate's text above.
    EXPECT_EQ(json::parse(health->body)["runtime"], "fast");
    EXPECT_EQ(post(s, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 3}}).status, 200);
  }
  {
    SCOPED_TRACE("a client that leaves mid-stream");
    const double cancelled_before = metric(
        s,
        "flextron_generations_total{budget=\"1\",router=\"static\",finish_reason=\"cancelled\"}");
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body =
        json({{"prompt", prompt}, {"max_tokens", 500}, {"stream", true}, {"budget", 1.0}}).dump();
    req.set_header("Content-Type", "application/json");
    int events = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      return ++events < 3;  // read a little, then hang up
    };
    auto c = s.client();
    c.send(req);
    EXPECT_EQ(events, 3);
    // The in-flight gauge returns to 0 and the generation ends as cancelled, long before its 500
    // tokens.
    bool drained = false;
    for (int i = 0; i < 200 && !drained; ++i) {
      drained = metric(s, "flextron_requests_in_flight") == 0 &&
                metric(s, "flextron_sequences_active") == 0;
      if (!drained) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_TRUE(drained);
    EXPECT_EQ(metric(s,
                     "flextron_generations_total{budget=\"1\",router=\"static\",finish_reason="
                     "\"cancelled\"}"),
              cancelled_before + 1);
  }
  {
    SCOPED_TRACE("metrics");
    auto res = s.client().Get("/metrics");
    ASSERT_TRUE(res);
    for (const char* series : {"flextron_request_duration_seconds_bucket{budget=\"0.5\"",
                               "flextron_queue_wait_seconds_count{budget=\"1\"",
                               "flextron_time_per_output_token_seconds_sum{budget=\"0.5\"",
                               "flextron_decode_batch_size_bucket{le=\"+Inf\"}"})
      EXPECT_NE(res->body.find(series), std::string::npos) << series;
    EXPECT_NE(
        res->body.find("flextron_http_requests_total{path=\"/v1/completions\",status=\"413\"}"),
        std::string::npos);
    EXPECT_EQ(s.server->metrics().in_flight(), 0);
  }
}

TEST(Server, ApiKeyQueueLimitAndCleanStop) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  flextron::serve::ServerOptions options;
  options.api_key = "sekret";
  options.engine.max_active = 1;
  options.engine.max_queue = 0;
  auto s = std::make_unique<LiveServer>(model, options);
  const json body = {{"prompt", "Once upon a time"}, {"max_tokens", 4}};
  {
    SCOPED_TRACE("API key");
    expect_error(post(*s, "/v1/completions", body), 401, "missing API key");
    expect_error(post(*s, "/v1/completions", body, "wrong"), 401, "incorrect API key");
    auto models = s->client().Get("/v1/models");
    ASSERT_TRUE(models);
    EXPECT_EQ(models->status, 401);
    auto health = s->client().Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    auto r = post(*s, "/v1/completions", body, "sekret");
    EXPECT_EQ(r.status, 200) << r.body.dump();
    EXPECT_EQ(r.flextron["router"], "full");  // a plain model serves its full width
    expect_error(post(*s, "/v1/completions", {{"prompt", "x"}, {"budget", 0.5}}, "sekret"), 400,
                 "no latency table");
  }
  {
    SCOPED_TRACE("a full queue answers 503 with Retry-After; stop() lets in-flight work finish");
    // One slot, no queue: while a long generation holds the slot, the next request is refused.
    std::atomic<bool> started{false};
    auto long_request = std::async(std::launch::async, [&] {
      httplib::Request req;
      req.method = "POST";
      req.path = "/v1/completions";
      req.body = json({{"prompt", "Once"}, {"max_tokens", 500}, {"stream", true}}).dump();
      req.set_header("Content-Type", "application/json");
      req.set_header("Authorization", "Bearer sekret");
      std::string received;
      req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
        received.append(data, n);
        started = true;
        return true;
      };
      auto c = s->client();
      c.send(req);
      return received;
    });
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    auto busy = post(*s, "/v1/completions", body, "sekret");
    EXPECT_EQ(busy.status, 503) << busy.body.dump();
    EXPECT_EQ(busy.retry_after, "1");
    s.reset();  // stop(): the stream in flight still ends properly
    const auto received = long_request.get();
    EXPECT_NE(received.find("data: [DONE]"), std::string::npos) << received.substr(0, 200);
    EXPECT_TRUE(std::regex_search(received, std::regex("\"finish_reason\":\"(length|stop)\"")))
        << received.substr(received.size() > 600 ? received.size() - 600 : 0);
  }
}

// An idle TCP connection to the server (connected, nothing sent), closed when destroyed.
struct IdleConnection {
  explicit IdleConnection(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~IdleConnection() { ::close(fd); }
  int fd = -1;
  bool connected = false;
};

// Abuse from clients: a chunked body past the limit is cut off with 413 as it arrives; numbers
// JSON cannot hold are a 400; connections past the bound are answered 503 at once while /health
// stays answered for everyone within it, and the server serves normally once they are gone.
TEST(Server, BodyLimitBadNumbersAndConnectionBound) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  flextron::serve::ServerOptions options;
  options.max_body_bytes = 4096;
  options.max_connections = 4;
  options.read_timeout = std::chrono::seconds(2);
  options.idle_timeout = std::chrono::seconds(2);
  LiveServer s(model, options);
  {
    SCOPED_TRACE("a chunked body over the limit: 413");
    // A raw socket: the client sends 1000-byte chunks and looks for an answer after each one,
    // so an early 413 is read before the connection closes.
    IdleConnection c(s.port);
    ASSERT_TRUE(c.connected);
    const std::string head =
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n";
    ASSERT_EQ(::send(c.fd, head.data(), head.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(head.size()));
    const std::string chunk = "3e8\r\n" + std::string(1000, 'a') + "\r\n";
    size_t sent = 0;
    std::string answer;
    while (sent < 100000 && answer.empty()) {
      if (::send(c.fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
      sent += 1000;
      pollfd readable{c.fd, POLLIN, 0};
      if (::poll(&readable, 1, 50) > 0) {
        char buffer[512];
        const auto n = ::recv(c.fd, buffer, sizeof buffer, 0);
        if (n > 0)
          answer.assign(buffer, static_cast<size_t>(n));
        else
          break;
      }
    }
    EXPECT_EQ(answer.substr(0, 12), "HTTP/1.1 413") << answer;
    EXPECT_LT(sent, 100000u) << "the whole body was read before refusing it";
  }
  {
    SCOPED_TRACE("a plain body over the limit: 413");
    auto r = post(s, "/v1/completions", {{"prompt", std::string(5000, 'a')}});
    EXPECT_EQ(r.status, 413) << r.body.dump();
  }
  {
    SCOPED_TRACE("1e999: 400");
    auto c = s.client();
    auto res =
        c.Post("/v1/completions", R"({"prompt": "x", "max_tokens": 1e999})", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
  }
  {
    SCOPED_TRACE("past max_connections: 503 with Retry-After, then served again");
    std::vector<std::unique_ptr<IdleConnection>> idle;
    auto hold_all = [&] {
      idle.clear();
      for (int i = 0; i < 4; ++i) {
        idle.push_back(std::make_unique<IdleConnection>(s.port));
        ASSERT_TRUE(idle.back()->connected);
      }
    };
    hold_all();
    // Once the server has accepted all four (a loaded machine may take a while), the next
    // connection is over the limit. The server drops an idle connection after its 2 s timeout,
    // so the four are opened afresh every second until a probe finds them all held.
    int over_status = 0;
    std::string retry_after;
    for (int attempt = 0; attempt < 200 && over_status != 503; ++attempt) {
      if (attempt % 20 == 19) hold_all();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto over = s.client().Get("/health");
      over_status = over ? over->status : 0;
      if (over) retry_after = over->get_header_value("Retry-After");
    }
    EXPECT_EQ(over_status, 503);
    EXPECT_FALSE(retry_after.empty());
    idle.clear();
    int status = 0;
    for (int attempt = 0; attempt < 100 && status != 200; ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      auto res = s.client().Get("/health");
      status = res ? res->status : 0;
    }
    EXPECT_EQ(status, 200);
    auto r = post(s, "/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 3}});
    EXPECT_EQ(r.status, 200) << r.body.dump();
  }
}

// A GPT-2-family Flextron model serves like a Llama one: concurrent seeded requests at two
// budgets (same-architecture steps batched) give exactly `flextron generate`'s text. (Sampled,
// not greedy: this briefly trained model's greedy text is newlines at every budget.)
TEST(Server, ServesAGpt2ModelAtEveryBudget) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto corpus = flextron::testing::read_file(flextron::testing::shared_data() /
                                                   "corpora/tinyshakespeare.txt");
  const auto text = dir / "train.txt";
  flextron::io::write_text_atomically(text, corpus.substr(0, 200000));
  auto r = run_cli("pretrain --family gpt2 --preset tiny --tokens 16384 --data " + quote(text) +
                   " --out " + quote(dir / "base"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto model = flextron::testing::build_routed_model(dir / "base", text, dir, false).routed;
  const std::string prompt = "KING";
  const int kTokens = 24;
  const std::string sampling = "--temperature 0.9 --seed 11";
  const std::map<double, std::string> expected = {
      {0.5, generate_text(model, prompt, 0.5, kTokens, sampling)},
      {1.0, generate_text(model, prompt, 1.0, kTokens, sampling)}};
  ASSERT_NE(expected.at(0.5), expected.at(1.0)) << "budgets should differ on this model";
  flextron::serve::ServerOptions options;
  options.engine.max_batch = 4;
  LiveServer s(model, options);
  std::vector<std::future<std::pair<double, Reply>>> replies;
  for (int copy = 0; copy < 2; ++copy)
    for (double budget : {0.5, 1.0})
      replies.push_back(std::async(std::launch::async, [&, budget] {
        const json body = {{"prompt", prompt},   {"max_tokens", kTokens}, {"temperature", 0.9},
                           {"seed", 11},         {"budget", budget},      {"router", "static"},
                           {"stream", copy == 1}};
        return std::make_pair(budget, post(s, "/v1/completions", body));
      }));
  for (auto& f : replies) {
    auto [budget, reply] = f.get();
    EXPECT_EQ(reply.status, 200) << reply.body.dump();
    EXPECT_EQ(reply.text, expected.at(budget)) << "budget " << budget;
  }
  auto health = s.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(json::parse(health->body)["runtime"], "fast");  // the GPT family runs there too
}

// The CLI process: SIGTERM stops it cleanly (exit 0) after answering what was in flight.
TEST(Server, CliStopsCleanlyOnSigterm) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  const auto out = dir / "serve.out", err = dir / "serve.err", pid_file = dir / "serve.pid";
  const std::string command = "'" + flextron::testing::cli() + "' serve --model " + quote(model) +
                              " --port 0 >" + quote(out) + " 2>" + quote(err) + " & echo $! >" +
                              quote(pid_file);
  ASSERT_EQ(std::system(command.c_str()), 0);
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    std::smatch m;
    const auto text = flextron::testing::read_file(out);
    if (std::regex_search(text, m, std::regex("listening on (\\d+)")))
      port = std::stoi(m[1]);
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(port, 0) << flextron::testing::read_file(err);
  const pid_t pid = std::stoi(flextron::testing::read_file(pid_file));
  httplib::Client c("127.0.0.1", port);
  auto res = c.Post("/v1/completions", R"({"prompt":"Once","max_tokens":5})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  bool gone = false;
  for (int i = 0; i < 400 && !gone; ++i) {
    gone = kill(pid, 0) != 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(gone) << "still running 20 s after SIGTERM";
  const auto log = flextron::testing::read_file(err);
  EXPECT_NE(log.find("SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("serve: stopped"), std::string::npos) << log;
  EXPECT_FALSE(c.Get("/health")) << "the port is still open";
}

}  // namespace

namespace openai_surface {

json post_json(const LiveServer& s, const std::string& path, const json& body, int* status) {
  auto res = s.client().Post(path, body.dump(), "application/json");
  if (!res) return {{"client_error", httplib::to_string(res.error())}};
  *status = res->status;
  return body.value("stream", false) && res->status == 200 ? json(res->body)
                                                           : json::parse(res->body, nullptr, false);
}

// Greedy decoding written from the definition on the torch forward: each step the whole text so
// far, argmax of the last position, and that token's log_softmax.
struct Reference {
  std::vector<int64_t> ids;
  std::vector<double> logprobs;
  std::vector<std::vector<std::pair<int64_t, double>>> top;  // the 3 likeliest per position
};
Reference greedy_reference(flextron::model::TransformerImpl& model, std::vector<int64_t> tokens,
                           int steps) {
  c10::InferenceMode inference;
  Reference r;
  for (int i = 0; i < steps; ++i) {
    auto logits = model.forward(torch::tensor(tokens, torch::kLong).unsqueeze(0))[0][-1];
    auto logp = torch::log_softmax(logits.to(torch::kDouble), 0);
    const int64_t id = logp.argmax().item<int64_t>();
    r.ids.push_back(id);
    r.logprobs.push_back(logp[id].item<double>());
    auto [values, order] = logp.topk(3);
    r.top.emplace_back();
    for (int k = 0; k < 3; ++k)
      r.top.back().emplace_back(order[k].item<int64_t>(), values[k].item<double>());
    tokens.push_back(id);
  }
  return r;
}

// Every row of issue 20's table against real HTTP: models.retrieve, content parts, logprobs
// (equal to log_softmax of an independent greedy forward), echo, prompt lists and token ids,
// n choices, stream_options.include_usage, the router's param, /tokenize and /detokenize, and
// refused fields named.
TEST(Server, OpenAiSurface) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  flextron::serve::ServerOptions options;
  options.model_name = "stories";
  LiveServer s(model, options);
  const std::string prompt = "Once upon a time";
  const int kTokens = 12;
  int status = 0;

  {
    SCOPED_TRACE("GET /v1/models/{id}");
    auto res = s.client().Get("/v1/models/stories");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    auto m = json::parse(res->body);
    EXPECT_EQ(m["id"], "stories");
    EXPECT_EQ(m["object"], "model");
    EXPECT_GT(m["created"].get<int64_t>(), 1600000000);  // a real time, not 0
    auto list = json::parse(s.client().Get("/v1/models")->body);
    EXPECT_EQ(list["data"][0], m);
    res = s.client().Get("/v1/models/gpt-4");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 404);
    auto e = json::parse(res->body);
    EXPECT_EQ(e["error"]["param"], "model");
    EXPECT_NE(e["error"]["message"].get<std::string>().find("gpt-4"), std::string::npos);
  }
  const json base = {{"max_tokens", kTokens}, {"temperature", 0}};
  auto completion = [&](const json& extra) {
    json body = base;
    body["prompt"] = prompt;
    if (extra.is_object()) body.update(extra);
    auto r = post_json(s, "/v1/completions", body, &status);
    EXPECT_EQ(status, 200) << r.dump();
    return r;
  };
  const auto plain = completion(json::object());
  const std::string text = plain["choices"][0]["text"];
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text, generate_text(model, prompt, 1.0, kTokens));
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
  {
    SCOPED_TRACE("content as text parts");
    json parts = base;
    parts["messages"] =
        json::array({{{"role", "user"},
                      {"content", json::array({{{"type", "text"}, {"text", "Tell me "}},
                                               {{"type", "text"}, {"text", "a story."}}})}}});
    json whole = base;
    whole["messages"] = json::array({{{"role", "user"}, {"content", "Tell me a story."}}});
    auto a = post_json(s, "/v1/chat/completions", parts, &status);
    EXPECT_EQ(status, 200) << a.dump();
    auto b = post_json(s, "/v1/chat/completions", whole, &status);
    EXPECT_EQ(a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]);
    parts["messages"][0]["content"][1] = {{"type", "image_url"}, {"image_url", {{"url", "x"}}}};
    auto bad = post_json(s, "/v1/chat/completions", parts, &status);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(bad["error"]["param"], "messages[0].content[1].type");
  }
  const auto prompt_ids = s.loaded.tokenizer->encode(prompt, true);
  const auto ref = greedy_reference(*s.loaded.model, prompt_ids, kTokens);
  {
    SCOPED_TRACE("completions logprobs: log_softmax of the model's logits");
    auto r = completion({{"logprobs", 3}});
    const auto& lp = r["choices"][0]["logprobs"];
    EXPECT_EQ(r["choices"][0]["text"], text);
    ASSERT_EQ(lp["tokens"].size(), static_cast<size_t>(kTokens)) << lp.dump();
    std::string joined;
    int64_t prev = s.loaded.tokenizer->bos_id();
    for (int i = 0; i < kTokens; ++i) {
      EXPECT_EQ(lp["text_offset"][i].get<size_t>(), joined.size());
      const std::string piece = lp["tokens"][i];
      joined += piece;
      EXPECT_EQ(piece,
                s.loaded.tokenizer->decode_piece(i == 0 ? prompt_ids.back() : prev, ref.ids[i]));
      prev = ref.ids[i];
      EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), ref.logprobs[i], 1e-4) << i;
      const auto& top = lp["top_logprobs"][i];
      EXPECT_EQ(top.size(), 3u) << top.dump();
      for (const auto& [id, value] : ref.top[i]) {
        const auto alt =
            s.loaded.tokenizer->decode_piece(i == 0 ? prompt_ids.back() : ref.ids[i - 1], id);
        ASSERT_TRUE(top.contains(alt)) << alt << " in " << top.dump();
        EXPECT_NEAR(top[alt].get<double>(), value, 1e-4);
      }
    }
    EXPECT_EQ(joined, text);
  }
  {
    SCOPED_TRACE("chat logprobs with top_logprobs");
    json body = base;
    body["messages"] = json::array({{{"role", "user"}, {"content", "Hi"}}});
    body["logprobs"] = true;
    body["top_logprobs"] = 2;
    auto r = post_json(s, "/v1/chat/completions", body, &status);
    ASSERT_EQ(status, 200) << r.dump();
    const auto& content = r["choices"][0]["logprobs"]["content"];
    ASSERT_FALSE(content.empty());
    std::string joined;
    for (const auto& t : content) {
      for (int b : t["bytes"]) joined += static_cast<char>(b);
      ASSERT_EQ(t["top_logprobs"].size(), 2u);
      // Greedy: the chosen token is the likeliest.
      EXPECT_NEAR(t["top_logprobs"][0]["logprob"].get<double>(), t["logprob"].get<double>(), 1e-9);
      EXPECT_LE(t["logprob"].get<double>(), 0.0);
    }
    EXPECT_EQ(joined, r["choices"][0]["message"]["content"]);
  }
  {
    SCOPED_TRACE("echo");
    auto r = completion({{"echo", true}});
    EXPECT_EQ(r["choices"][0]["text"], prompt + text);
  }
  {
    SCOPED_TRACE("prompt lists and token ids: one choice each");
    auto tokenized =
        post_json(s, "/tokenize", {{"content", prompt}, {"add_special", true}}, &status);
    ASSERT_EQ(status, 200) << tokenized.dump();
    EXPECT_EQ(tokenized["tokens"], json(prompt_ids));
    auto r = completion({{"prompt", json::array({prompt, "The cat"})}});
    ASSERT_EQ(r["choices"].size(), 2u);
    EXPECT_EQ(r["choices"][0]["index"], 0);
    EXPECT_EQ(r["choices"][1]["index"], 1);
    EXPECT_EQ(r["choices"][0]["text"], text);
    EXPECT_EQ(r["choices"][1]["text"], generate_text(model, "The cat", 1.0, kTokens));
    EXPECT_EQ(r["usage"]["prompt_tokens"].get<int64_t>(),
              static_cast<int64_t>(prompt_ids.size() +
                                   s.loaded.tokenizer->encode("The cat", true).size()));
    auto ids = completion({{"prompt", tokenized["tokens"]}});
    EXPECT_EQ(ids["choices"][0]["text"], text);
    auto list = completion({{"prompt", json::array({tokenized["tokens"], tokenized["tokens"]})}});
    ASSERT_EQ(list["choices"].size(), 2u);
    EXPECT_EQ(list["choices"][1]["text"], text);
    auto bad = post_json(s, "/v1/completions", {{"prompt", json::array({1, 99999})}}, &status);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(bad["error"]["param"], "prompt");
  }
  {
    SCOPED_TRACE("n: 3 seeded choices, reproducible and different");
    json body = {
        {"prompt", prompt}, {"max_tokens", 24}, {"temperature", 1.0}, {"n", 3}, {"seed", 11}};
    auto a = post_json(s, "/v1/completions", body, &status);
    ASSERT_EQ(status, 200) << a.dump();
    auto b = post_json(s, "/v1/completions", body, &status);
    ASSERT_EQ(a["choices"].size(), 3u);
    std::set<std::string> distinct;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(a["choices"][i]["index"], i);
      EXPECT_EQ(a["choices"][i]["text"], b["choices"][i]["text"]);
      distinct.insert(a["choices"][i]["text"].get<std::string>());
    }
    EXPECT_EQ(distinct.size(), 3u);
    EXPECT_GT(a["usage"]["completion_tokens"].get<int64_t>(), 24);  // all three counted
    // Streamed, the same three texts, each choice's chunks by index, usage at the end.
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    body["logprobs"] = 1;
    auto raw = post_json(s, "/v1/completions", body, &status);
    ASSERT_EQ(status, 200);
    auto chunks = events(raw.get<std::string>());
    ASSERT_FALSE(chunks.empty());
    std::vector<std::string> texts(3), pieces(3);
    for (size_t k = 0; k + 1 < chunks.size(); ++k) {
      ASSERT_EQ(chunks[k]["choices"].size(), 1u) << chunks[k].dump();
      EXPECT_FALSE(chunks[k].contains("usage"));
      const auto& c = chunks[k]["choices"][0];
      const auto i = c["index"].get<size_t>();
      texts[i] += c["text"].get<std::string>();
      if (!c["logprobs"].is_null())
        for (const auto& p : c["logprobs"]["tokens"]) pieces[i] += p.get<std::string>();
    }
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(texts[i], a["choices"][i]["text"]) << i;
      EXPECT_EQ(pieces[i], texts[i]) << i;
    }
    const auto& last = chunks.back();
    EXPECT_TRUE(last["choices"].empty()) << last.dump();
    EXPECT_EQ(last["usage"], a["usage"]);
  }
  {
    SCOPED_TRACE("streams without include_usage carry no usage");
    json body = base;
    body["messages"] = json::array({{{"role", "user"}, {"content", "Hi"}}});
    body["stream"] = true;
    auto raw = post_json(s, "/v1/chat/completions", body, &status);
    ASSERT_EQ(status, 200);
    auto chunks = events(raw.get<std::string>());
    ASSERT_FALSE(chunks.empty());
    EXPECT_EQ(chunks.front()["choices"][0]["delta"]["role"], "assistant");
    for (const auto& c : chunks) EXPECT_FALSE(c.contains("usage")) << c.dump();
    EXPECT_FALSE(chunks.back()["choices"][0]["finish_reason"].is_null());
  }
  {
    SCOPED_TRACE("/detokenize");
    auto r = post_json(s, "/detokenize", {{"tokens", json(prompt_ids)}}, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["content"], s.loaded.tokenizer->decode(prompt_ids));
    auto pieces = post_json(s, "/tokenize", {{"content", prompt}, {"with_pieces", true}}, &status);
    ASSERT_EQ(status, 200);
    std::string joined;
    for (const auto& p : pieces["tokens"]) joined += p["piece"].get<std::string>();
    EXPECT_EQ(joined, s.loaded.tokenizer->decode(s.loaded.tokenizer->encode(prompt, false)));
    auto bad = post_json(s, "/detokenize", {{"tokens", json::array({1, 1 << 20})}}, &status);
    EXPECT_EQ(status, 400);
    EXPECT_EQ(bad["error"]["param"], "tokens");
  }
  {
    SCOPED_TRACE("refused fields name themselves");
    for (const auto& [extra, param] : std::vector<std::pair<json, std::string>>{
             {{{"router", "smart"}}, "router"},
             {{{"response_format",
                {{"type", "json_schema"},
                 {"json_schema", {{"schema", {{"type", "integer"}, {"minimum", 0}}}}}}}},
              "response_format.json_schema.schema.minimum"},
             {{{"logit_bias", {{"5", 10}}}}, "logit_bias"},
             {{{"n", 40}}, "n"}}) {
      json body = base;
      body["prompt"] = prompt;
      body.update(extra);
      auto r = post_json(s, "/v1/completions", body, &status);
      EXPECT_EQ(status, 400) << r.dump();
      EXPECT_EQ(r["error"]["param"], param) << r.dump();
      EXPECT_EQ(r["error"]["message"].get<std::string>().find("--"), std::string::npos) << r.dump();
    }
  }
}

// response_format through HTTP, both endpoints, streamed or not: every choice parses and has
// the schema's shape; too few max_tokens for the shortest valid output is a 400 naming it.
TEST(Server, StructuredOutput) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  LiveServer s(model, {});
  int status = 0;
  const json schema = json::parse(R"({"type": "object",
      "properties": {"name": {"type": "string", "maxLength": 12},
                     "mood": {"enum": ["happy", "sad"]},
                     "friends": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
      "required": ["name", "mood", "friends"], "additionalProperties": false})");
  const json format = {
      {"type", "json_schema"},
      {"json_schema", {{"name", "character"}, {"strict", true}, {"schema", schema}}}};
  auto check = [&](const std::string& text) {
    json v;
    ASSERT_NO_THROW(v = json::parse(text)) << text;
    ASSERT_TRUE(v.is_object()) << text;
    EXPECT_EQ(v.size(), 3u) << text;
    EXPECT_TRUE(v["name"].is_string()) << text;
    EXPECT_TRUE(v["mood"] == "happy" || v["mood"] == "sad") << text;
    ASSERT_TRUE(v["friends"].is_array()) << text;
    EXPECT_LE(v["friends"].size(), 3u) << text;
    for (const auto& f : v["friends"]) EXPECT_TRUE(f.is_number_integer()) << text;
  };
  {
    SCOPED_TRACE("completions, n = 3");
    auto r = post_json(s, "/v1/completions",
                       {{"prompt", "Once upon a time"},
                        {"max_tokens", 120},
                        {"n", 3},
                        {"seed", 4},
                        {"response_format", format}},
                       &status);
    ASSERT_EQ(status, 200) << r.dump();
    ASSERT_EQ(r["choices"].size(), 3u);
    for (const auto& c : r["choices"]) {
      check(c["text"]);
      EXPECT_EQ(c["finish_reason"], "stop");
    }
  }
  {
    SCOPED_TRACE("chat, streamed, json_object");
    auto r = post(s, "/v1/chat/completions",
                  {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                   {"max_tokens", 80},
                   {"stream", true},
                   {"response_format", {{"type", "json_object"}}}});
    ASSERT_EQ(r.status, 200) << r.body.dump();
    const std::string text = r.text;
    json v;
    ASSERT_NO_THROW(v = json::parse(text)) << text;
    EXPECT_TRUE(v.is_object()) << text;
  }
  {
    SCOPED_TRACE("too few tokens");
    auto r =
        post_json(s, "/v1/completions",
                  {{"prompt", "Once"}, {"max_tokens", 10}, {"response_format", format}}, &status);
    EXPECT_EQ(status, 400) << r.dump();
    EXPECT_EQ(r["error"]["param"], "max_tokens");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("shortest valid output"),
              std::string::npos);
  }
}

}  // namespace openai_surface

namespace chat_templates {

// The chat template a model carries decides how chat requests are rendered: ours when it has
// none (and ours goes into GGUF exports, where the importer finds it again), a family named with
// chat_template, and a start-up error naming the file and --chat-template for one we cannot
// render.
TEST(Server, ChatTemplateFromTheModelOrNamed) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  const json chat = {{"max_tokens", 4},
                     {"temperature", 0},
                     {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};
  auto info_of = [](const LiveServer& s) {
    return json::parse(s.client().Get("/v1/models")->body)["data"][0]["flextron"];
  };
  flextron::serve::ServerOptions options;
  {
    LiveServer s(model, options);
    EXPECT_EQ(s.server->chat_template(), "flextron");
    EXPECT_EQ(info_of(s)["chat_template"], "flextron");
    int status = 0;
    auto r = openai_surface::post_json(s, "/v1/chat/completions", chat, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["usage"]["prompt_tokens"].get<size_t>(),
              s.loaded.tokenizer->encode("User: Hi\nAssistant:", true).size());
  }
  {
    options.chat_template = "chatml";
    LiveServer s(model, options);
    EXPECT_EQ(info_of(s)["chat_template"], "chatml");
    int status = 0;
    auto r = openai_surface::post_json(s, "/v1/chat/completions", chat, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(
        r["usage"]["prompt_tokens"].get<size_t>(),
        s.loaded.tokenizer->encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", true)
            .size());
  }
  {
    SCOPED_TRACE("a template we cannot render");
    flextron::io::write_text_atomically(model / "chat_template.jinja", "{{ messages | tojson }}");
    auto loaded = flextron::io::load_model_dir(model);
    try {
      flextron::serve::Server server(model, loaded, flextron::serve::ServerOptions{});
      ADD_FAILURE() << "served a template it cannot render";
    } catch (const flextron::Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("chat_template.jinja"), std::string::npos) << m;
      EXPECT_NE(m.find("--chat-template"), std::string::npos) << m;
    }
    fs::remove(model / "chat_template.jinja");
  }
  {
    SCOPED_TRACE("GGUF export carries our template; import finds it");
    fs::create_directories(dir / "g");  // an existing directory: model.gguf goes inside
    auto r = run_cli("export --model " + quote(model) + " --to gguf --out " + quote(dir / "g"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto meta = flextron::io::read_gguf(dir / "g" / "model.gguf").metadata;
    ASSERT_TRUE(meta.count("tokenizer.chat_template"));
    EXPECT_EQ(meta.at("tokenizer.chat_template").value.get<std::string>(),
              flextron::text::flextron_chat_template());
    r = run_cli("import --from gguf --model " + quote(dir / "g" / "model.gguf") + " --out " +
                quote(dir / "back"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto back = flextron::io::load_model_dir(dir / "back");
    EXPECT_EQ(flextron::text::recognise_chat_template(back.tokenizer->chat_template()),
              flextron::text::ChatFormat::Flextron);
  }
}

}  // namespace chat_templates

namespace speculative {

using openai_surface::post_json;

// Self-speculative serving: a server started with a draft gives greedy requests exactly the
// plain server's text and log-probabilities (streamed or not, with "speculative" on or off per
// request) and reports its rounds; seeded sampling with n choices works; a server without a
// draft refuses "speculative": true and a non-boolean is named.
TEST(Server, SpeculativeDecoding) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  flextron::serve::ServerOptions options;
  options.speculative = true;  // no draft named: calibrated at start
  LiveServer spec(model, options);
  LiveServer plain(model, {});
  int status = 0;
  const json greedy = {{"prompt", "Once upon a time, there was a"},
                       {"max_tokens", 48},
                       {"temperature", 0},
                       {"logprobs", 2}};
  const auto reference = post_json(plain, "/v1/completions", greedy, &status);
  ASSERT_EQ(status, 200) << reference.dump();
  EXPECT_FALSE(reference["flextron"].contains("speculative"));
  {
    SCOPED_TRACE("greedy, speculative by the server's default");
    auto r = post_json(spec, "/v1/completions", greedy, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["choices"][0]["text"], reference["choices"][0]["text"]);
    EXPECT_EQ(r["usage"]["completion_tokens"], reference["usage"]["completion_tokens"]);
    const auto& got = r["choices"][0]["logprobs"]["token_logprobs"];
    const auto& want = reference["choices"][0]["logprobs"]["token_logprobs"];
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i].get<double>(), want[i].get<double>(), 1e-5) << "token " << i;
    ASSERT_TRUE(r["flextron"].contains("speculative")) << r["flextron"].dump();
    const auto& s = r["flextron"]["speculative"];
    EXPECT_FALSE(s["draft"].get<std::string>().empty());
    EXPECT_GT(s["rounds"].get<int64_t>(), 0);
    EXPECT_GE(s["tokens_per_round"].get<double>(), 1.0);
    EXPECT_LE(s["acceptance_rate"].get<double>(), 1.0);
  }
  {
    SCOPED_TRACE("greedy, streamed chat, against the plain server");
    const json chat = {{"messages", json::array({{{"role", "user"}, {"content", "Tell a story"}}})},
                       {"max_tokens", 40},
                       {"temperature", 0},
                       {"stream", true}};
    auto a = post(spec, "/v1/chat/completions", chat);
    auto b = post(plain, "/v1/chat/completions", chat);
    ASSERT_EQ(a.status, 200) << a.body.dump();
    ASSERT_EQ(b.status, 200) << b.body.dump();
    EXPECT_EQ(a.text, b.text);
    EXPECT_FALSE(a.text.empty());
  }
  {
    SCOPED_TRACE("turned off per request");
    json off = greedy;
    off["speculative"] = false;
    auto r = post_json(spec, "/v1/completions", off, &status);
    ASSERT_EQ(status, 200) << r.dump();
    EXPECT_EQ(r["choices"][0]["text"], reference["choices"][0]["text"]);
    EXPECT_FALSE(r["flextron"].contains("speculative")) << r["flextron"].dump();
  }
  {
    SCOPED_TRACE("seeded sampling, n = 3");
    const json sampled = {{"prompt", "The little dog"},
                          {"max_tokens", 30},
                          {"temperature", 0.8},
                          {"seed", 11},
                          {"n", 3}};
    auto a = post_json(spec, "/v1/completions", sampled, &status);
    ASSERT_EQ(status, 200) << a.dump();
    ASSERT_EQ(a["choices"].size(), 3u);
    for (const auto& c : a["choices"]) EXPECT_FALSE(c["text"].get<std::string>().empty());
    // The same seed on the same server and draft repeats the text.
    auto again = post_json(spec, "/v1/completions", sampled, &status);
    ASSERT_EQ(status, 200);
    for (size_t i = 0; i < 3; ++i)
      EXPECT_EQ(again["choices"][i]["text"], a["choices"][i]["text"]) << "choice " << i;
  }
  {
    SCOPED_TRACE("bad requests");
    json on = greedy;
    on["speculative"] = true;
    auto r = post_json(plain, "/v1/completions", on, &status);
    EXPECT_EQ(status, 400) << r.dump();
    EXPECT_EQ(r["error"]["param"], "speculative");
    EXPECT_NE(r["error"]["message"].get<std::string>().find("--speculative"), std::string::npos);
    on["speculative"] = "yes";
    r = post_json(spec, "/v1/completions", on, &status);
    EXPECT_EQ(status, 400) << r.dump();
    EXPECT_EQ(r["error"]["param"], "speculative");
  }
}

}  // namespace speculative
