// `flextron serve`: an OpenAI-compatible HTTP server (cpp-httplib) over one elastic model, where
// every request picks its own budget. GET /health, GET /v1/models, POST /v1/completions,
// POST /v1/chat/completions (Server-Sent Events with "stream": true), GET /metrics (Prometheus).
// See docs/serving.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "io/model_dir.h"
#include "route/draft.h"
#include "serve/engine.h"
#include "serve/metrics.h"

namespace flextron::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless asked otherwise
  int port = 8080;                 // 0: any free port (see Server::bind)
  EngineOptions engine;
  double default_budget = 1.0;      // latency fraction for requests that name none
  std::string api_key;              // non-empty: "Authorization: Bearer KEY" on all but /health
  size_t max_body_bytes = 1 << 20;  // chunked bodies too: 413 as soon as they pass it
  // Connections served at once, each on its own thread (idle keep-alive ones included); more
  // are answered 503 and closed.
  size_t max_connections = 512;
  // A client that sends nothing for this long while a request is being read (or idles this
  // long on a keep-alive connection) is disconnected.
  std::chrono::seconds read_timeout{10};
  std::chrono::seconds idle_timeout{5};
  std::string model_name;  // the id /v1/models lists; default: the directory's name
  std::chrono::milliseconds shutdown_grace{10000};  // in-flight work may finish within it
  bool access_log = true;                           // one line per request on stderr
  // The chat template: "auto" (the model's own, recognised; ours when it has none) or a family
  // name (text/chat_template.h).
  std::string chat_template = "auto";
  // Self-speculative decoding (runtime/speculative.h) for every request that does not say
  // "speculative": false; the draft is chosen at start (route/draft.h). Fast runtime only.
  bool speculative = false;
  route::DraftRequest draft;
  int64_t draft_tokens = 0;  // 0: adaptive
};

class Server {
 public:
  // `loaded` must outlive the server. Throws flextron::Error for bad options.
  Server(const std::filesystem::path& model_dir, io::LoadedModel& loaded,
         const ServerOptions& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port; returns the port (the chosen one for port 0). Throws flextron::Error.
  int bind();
  // Serves until stop(); returns once in-flight work has finished or been cancelled.
  void run();
  // Stops taking requests, lets in-flight ones finish within the grace period, closes the port.
  // Thread-safe, idempotent.
  void stop();
  Metrics& metrics();
  // The runtime of jobs without a dynamic router: "fast" or "torch" (Engine::runtime).
  const char* runtime() const;
  // The chat template family chat requests are rendered in.
  std::string chat_template() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flextron::serve
