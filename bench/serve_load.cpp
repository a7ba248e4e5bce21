// A bounded load test for `flextron serve`, from a second process over loopback: C clients send
// a fixed number of completions in all, cycling through the given budgets, each client one
// request at a time. Reports throughput (generated tokens/s, requests/s), per-budget latency
// percentiles (whole request, time to first token via streaming, time per output token), errors,
// and how much faster the smallest budget's requests finished than the largest's under the same
// load. Writes the JSON beside the table.
//
// usage: serve_load --port P [--host 127.0.0.1] [--clients 16] [--requests 128]
//                   [--budgets 0.5,1.0] [--max-tokens 64] [--prompt TEXT] [--api-key K]
//                   [--json serve_load.json]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

struct Sample {
  double budget;
  bool ok;
  double seconds, first_token_seconds;
  int64_t tokens;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

std::vector<double> parse_budgets(const std::string& text) {
  std::vector<double> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    out.push_back(std::stod(text.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// One streamed completion: total time, time to the first text, tokens generated.
Sample run_request(const std::string& host, int port, const std::string& key, double budget,
                   int max_tokens, const std::string& prompt) {
  httplib::Client client(host, port);
  client.set_read_timeout(300, 0);
  if (!key.empty()) client.set_bearer_token_auth(key.c_str());
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = json({{"prompt", prompt},
                   {"max_tokens", max_tokens},
                   {"temperature", 0.8},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}},  // usage in a last chunk
                   {"budget", budget}})
                 .dump();
  Sample s{budget, false, 0.0, 0.0, 0};
  const auto start = Clock::now();
  std::string buffer;
  bool first = true, done = false;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      const std::string event = buffer.substr(0, end);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      auto chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded() || chunk.contains("error")) return false;
      const auto choices = chunk.find("choices");  // empty in the usage chunk
      if (first && choices != chunk.end() && choices->is_array() && !choices->empty() &&
          !(*choices)[0].value("text", "").empty()) {
        s.first_token_seconds = std::chrono::duration<double>(Clock::now() - start).count();
        first = false;
      }
      const auto usage = chunk.find("usage");  // null until the last chunk
      if (usage != chunk.end() && usage->is_object())
        s.tokens = usage->value("completion_tokens", s.tokens);
    }
    return true;
  };
  auto res = client.send(req);
  s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  s.ok = res && res->status == 200 && done;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1", key, prompt = "Once upon a time", json_path = "serve_load.json";
  int port = 0, clients = 16, requests = 128, max_tokens = 64;
  std::vector<double> budgets = {0.5, 1.0};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--host")
      host = value;
    else if (flag == "--port")
      port = std::atoi(value.c_str());
    else if (flag == "--clients")
      clients = std::atoi(value.c_str());
    else if (flag == "--requests")
      requests = std::atoi(value.c_str());
    else if (flag == "--budgets")
      budgets = parse_budgets(value);
    else if (flag == "--max-tokens")
      max_tokens = std::atoi(value.c_str());
    else if (flag == "--prompt")
      prompt = value;
    else if (flag == "--api-key")
      key = value;
    else if (flag == "--json")
      json_path = value;
    else {
      std::fprintf(stderr, "serve_load: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (port <= 0 || clients < 1 || requests < 1 || budgets.empty()) {
    std::fprintf(stderr,
                 "usage: serve_load --port P [--clients C] [--requests N] [--budgets B,...]\n");
    return 2;
  }

  std::atomic<int> next{0};
  std::mutex mutex;
  std::vector<Sample> samples;
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&] {
      for (int i; (i = next++) < requests;) {
        auto s = run_request(host, port, key, budgets[static_cast<size_t>(i) % budgets.size()],
                             max_tokens, prompt);
        std::lock_guard<std::mutex> lock(mutex);
        samples.push_back(s);
        if (samples.size() % 16 == 0)
          std::fprintf(stderr, "serve_load: %zu/%d requests\n", samples.size(), requests);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();

  int64_t tokens = 0, errors = 0;
  std::map<double, std::vector<Sample>> by_budget;
  for (const auto& s : samples) {
    if (!s.ok) {
      ++errors;
      continue;
    }
    tokens += s.tokens;
    by_budget[s.budget].push_back(s);
  }
  json out = {{"clients", clients},
              {"requests", requests},
              {"max_tokens", max_tokens},
              {"wall_seconds", wall},
              {"errors", errors},
              {"generated_tokens", tokens},
              {"tokens_per_second", static_cast<double>(tokens) / wall},
              {"requests_per_second", static_cast<double>(samples.size() - errors) / wall}};
  std::printf(
      "%d clients, %d requests, %d max tokens: %.1f s, %.1f tokens/s, %.2f requests/s, "
      "%lld errors\n",
      clients, requests, max_tokens, wall, out["tokens_per_second"].get<double>(),
      out["requests_per_second"].get<double>(), static_cast<long long>(errors));
  std::printf("%-7s %5s %9s %9s %9s %11s %11s\n", "budget", "ok", "p50 s", "p99 s", "ttft p50",
              "ms/token p50", "tokens/req");
  json rows = json::array();
  for (const auto& [budget, list] : by_budget) {
    std::vector<double> total, ttft, per_token, count;
    for (const auto& s : list) {
      total.push_back(s.seconds);
      ttft.push_back(s.first_token_seconds);
      if (s.tokens > 1)
        per_token.push_back(1e3 * (s.seconds - s.first_token_seconds) /
                            static_cast<double>(s.tokens - 1));
      count.push_back(static_cast<double>(s.tokens));
    }
    json row = {{"budget", budget},
                {"ok", list.size()},
                {"p50_seconds", percentile(total, 0.5)},
                {"p99_seconds", percentile(total, 0.99)},
                {"ttft_p50_seconds", percentile(ttft, 0.5)},
                {"ms_per_token_p50", percentile(per_token, 0.5)},
                {"mean_tokens", percentile(count, 0.5)}};
    std::printf("%-7g %5zu %9.3f %9.3f %9.3f %11.2f %11.1f\n", budget, list.size(),
                row["p50_seconds"].get<double>(), row["p99_seconds"].get<double>(),
                row["ttft_p50_seconds"].get<double>(), row["ms_per_token_p50"].get<double>(),
                row["mean_tokens"].get<double>());
    rows.push_back(row);
  }
  out["budgets"] = rows;
  if (rows.size() >= 2) {
    // Time per output token, not whole-request time: requests stop at different lengths (EOS).
    const double speedup = rows.back()["ms_per_token_p50"].get<double>() /
                           rows.front()["ms_per_token_p50"].get<double>();
    out["speedup_smallest_vs_largest"] = speedup;
    std::printf("budget %g requests decode %.2fx faster per token than budget %g under load\n",
                rows.front()["budget"].get<double>(), speedup, rows.back()["budget"].get<double>());
  }
  std::ofstream(json_path) << out.dump(2) << "\n";
  return errors == 0 ? 0 : 1;
}
