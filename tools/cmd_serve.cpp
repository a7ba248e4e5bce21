// flextron serve: the OpenAI-compatible server (src/serve/server.h). SIGINT / SIGTERM stop it
// cleanly: no new requests, in-flight ones finish within --shutdown-grace, the port closes.
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "device_options.h"
#include "io/model_dir.h"
#include "number_options.h"
#include "runtime/fast_generate.h"
#include "serve/server.h"
#include "speculative_options.h"
#include "text/chat_template.h"

namespace flextron::cli {

namespace {
// SIGINT / SIGTERM may land on any thread (LibTorch starts some before main), so the handler
// only writes the signal number to a pipe (async-signal-safe), and a watcher thread reads it.
int signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const char byte = static_cast<char>(sig);
  [[maybe_unused]] auto n = write(signal_pipe[1], &byte, 1);
}

struct ServeArgs {
  std::string model;
  serve::ServerOptions server;
  double grace_seconds = 10.0;
  int64_t timeout_seconds = 10, idle_timeout_seconds = 5;
  bool quiet = false;
  DeviceArgs device;
  SpeculativeArgs speculative;
};

void run_serve(ServeArgs& a) {
  if (!(a.grace_seconds >= 0)) fail("--shutdown-grace", "must be >= 0 seconds");
  a.server.shutdown_grace = std::chrono::milliseconds(static_cast<int64_t>(1e3 * a.grace_seconds));
  a.server.access_log = !a.quiet;
  a.server.read_timeout = std::chrono::seconds(a.timeout_seconds);
  a.server.idle_timeout = std::chrono::seconds(a.idle_timeout_seconds);
  auto loaded = io::load_model_dir(a.model, a.device.load_options());
  // auto: the directory's own format where the fast runtime serves it, else fp32 on torch.
  if (a.server.engine.quant == "auto")
    a.server.engine.quant = runtime::use_fast_runtime(a.server.engine.runtime, *loaded.model)
                                ? loaded.stored_weights
                                : "f32";
  a.server.speculative = a.speculative.on;
  a.server.draft = a.speculative.draft;
  a.server.draft_tokens = a.speculative.draft_tokens;
  serve::Server server(a.model, loaded, a.server);
  const int port = server.bind();
  std::fprintf(
      stderr,
      "serve: %s on http://%s:%d (%s runtime, %s weights, %s chat template, max batch %lld, %lld "
      "active, queue %lld)%s\n",
      a.model.c_str(), a.server.host.c_str(), port, server.runtime(), a.server.engine.quant.c_str(),
      server.chat_template().c_str(), static_cast<long long>(a.server.engine.max_batch),
      static_cast<long long>(a.server.engine.max_active),
      static_cast<long long>(a.server.engine.max_queue),
      a.server.api_key.empty() ? "" : ", API key required");
  std::printf("listening on %d\n", port);  // for scripts that asked for port 0
  std::fflush(stdout);

  if (pipe(signal_pipe) != 0) fail("serve", "cannot create the signal pipe");
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  std::thread watcher([&] {
    char sig = 0;
    while (read(signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig == 0) return;  // the server ended on its own (see below)
    std::fprintf(stderr, "serve: %s, finishing in-flight requests (up to %g s)\n",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", a.grace_seconds);
    server.stop();
  });
  server.run();
  // run() returns after stop(), or if listening failed: wake the watcher either way.
  const char done = 0;
  [[maybe_unused]] auto n = write(signal_pipe[1], &done, 1);
  watcher.join();
  std::fprintf(stderr, "serve: stopped\n");
}
}  // namespace

void register_serve(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  auto* cmd =
      app.add_subcommand("serve", "OpenAI-compatible HTTP server; each request picks its budget");
  cmd->add_option("--model", args->model, "Model directory")->required();
  cmd->add_option("--host", args->server.host, "Address to bind (loopback by default)")
      ->capture_default_str();
  cmd->add_option("--port", args->server.port, "Port (0: any free port, printed at start)")
      ->check(in_range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--max-batch", args->server.engine.max_batch, "Sequences decoded in one step")
      ->check(positive())
      ->capture_default_str();
  cmd->add_flag("--batch-across-budgets,!--no-batch-across-budgets",
                args->server.engine.batch_across_budgets,
                "Fast runtime: decode sequences at different static budgets in one step (the "
                "widths they share once for all); off: only those of one architecture")
      ->capture_default_str();
  cmd->add_option("--max-active", args->server.engine.max_active,
                  "Sequences generating at once (each holds a KV cache)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--max-queue", args->server.engine.max_queue,
                  "Requests waiting beyond those; more are answered 503 + Retry-After")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--default-budget", args->server.default_budget,
                  "Latency budget of requests that name none")
      ->check(unit_fraction())
      ->capture_default_str();
  cmd->add_option("--api-key", args->server.api_key,
                  "Require \"Authorization: Bearer KEY\" (all endpoints but /health)");
  cmd->add_option("--max-body", args->server.max_body_bytes,
                  "Largest request body, bytes (413 above)")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--model-name", args->server.model_name,
                  "Model id in /v1/models and responses (default: the directory's name)");
  cmd->add_option("--shutdown-grace", args->grace_seconds,
                  "Seconds in-flight requests may take to finish after SIGINT/SIGTERM")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--max-connections", args->server.max_connections,
                  "Connections served at once (idle keep-alive ones count); more get 503")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--timeout", args->timeout_seconds,
                  "Seconds a client may stay silent while sending a request or reading a reply")
      ->check(in_range(1, 3600))
      ->capture_default_str();
  cmd->add_option("--idle-timeout", args->idle_timeout_seconds,
                  "Seconds an idle keep-alive connection stays open")
      ->check(in_range(1, 3600))
      ->capture_default_str();
  cmd->add_option("--chat-template", args->server.chat_template,
                  "Chat template family: auto (the model's own; ours when it has none), " +
                      text::chat_format_names())
      ->capture_default_str();
  cmd->add_flag("--quiet", args->quiet, "No access log on stderr");
  args->device.add_to(cmd);
  add_runtime_option(cmd, args->server.engine.runtime);
  args->server.engine.quant = "auto";
  add_quant_option(cmd, args->server.engine.quant);
  args->speculative.add_to(cmd);
  cmd->callback([args] { run_serve(*args); });
}

}  // namespace flextron::cli
