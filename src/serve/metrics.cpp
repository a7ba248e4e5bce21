#include "serve/metrics.h"

#include <cstdio>
#include <sstream>

namespace flextron::serve {

namespace {
std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// {budget="0.5",router="static"}: the label set of a generation series (also its map key).
std::string generation_labels(const Metrics::Generation& g) {
  return "budget=\"" + g.budget + "\",router=\"" + g.router + "\"";
}
}  // namespace

void Metrics::Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds.size() && v > bounds[i]) ++i;
  ++counts[i];
  sum += v;
  ++count;
}

Metrics::Histogram Metrics::seconds_histogram() {
  std::vector<double> bounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
  return Histogram{bounds, std::vector<uint64_t>(bounds.size() + 1), 0.0, 0};
}

void Metrics::count_request(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{endpoint, status}];
}

void Metrics::record_generation(const Generation& g) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto key = generation_labels(g);
  prompt_tokens_[key] += static_cast<uint64_t>(g.prompt_tokens);
  completion_tokens_[key] += static_cast<uint64_t>(g.completion_tokens);
  ++generations_[key + ",finish_reason=\"" + g.finish_reason + "\""];
  auto histogram = [&](std::map<std::string, Histogram>& m) -> Histogram& {
    auto it = m.find(key);
    if (it == m.end()) it = m.emplace(key, seconds_histogram()).first;
    return it->second;
  };
  histogram(latency_).observe(g.total_seconds);
  histogram(queue_).observe(g.queue_seconds);
  if (g.completion_tokens > 0) {
    histogram(first_token_).observe(g.first_token_seconds);
    if (g.completion_tokens > 1)
      histogram(per_token_)
          .observe((g.total_seconds - g.first_token_seconds) /
                   static_cast<double>(g.completion_tokens - 1));
  }
}

void Metrics::record_batch(int64_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  batch_.observe(static_cast<double>(size));
}

void Metrics::add_in_flight(int delta) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_flight_ += delta;
}

void Metrics::set_queue(int64_t waiting, int64_t active) {
  std::lock_guard<std::mutex> lock(mutex_);
  waiting_ = waiting;
  active_ = active;
}

int64_t Metrics::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::ostringstream out;
  auto header = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  auto histogram = [&](const std::string& name, const std::string& labels, const Histogram& h) {
    const std::string sep = labels.empty() ? "" : ",";
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h.bounds.size(); ++i) {
      cumulative += h.counts[i];
      const std::string le = i < h.bounds.size() ? number(h.bounds[i]) : "+Inf";
      out << name << "_bucket{" << labels << sep << "le=\"" << le << "\"} " << cumulative << "\n";
    }
    const std::string braces = labels.empty() ? "" : "{" + labels + "}";
    out << name << "_sum" << braces << " " << number(h.sum) << "\n";
    out << name << "_count" << braces << " " << h.count << "\n";
  };
  auto counters = [&](const char* name, const std::map<std::string, uint64_t>& m) {
    for (const auto& [labels, v] : m) out << name << "{" << labels << "} " << v << "\n";
  };

  header("flextron_http_requests_total", "counter", "HTTP requests answered, by path and status.");
  for (const auto& [key, v] : requests_)
    out << "flextron_http_requests_total{path=\"" << key.first << "\",status=\"" << key.second
        << "\"} " << v << "\n";
  header("flextron_requests_in_flight", "gauge", "Requests being answered now.");
  out << "flextron_requests_in_flight " << in_flight_ << "\n";
  header("flextron_queue_waiting", "gauge", "Generations waiting for a slot in the engine.");
  out << "flextron_queue_waiting " << waiting_ << "\n";
  header("flextron_sequences_active", "gauge", "Generations the engine is decoding.");
  out << "flextron_sequences_active " << active_ << "\n";
  header("flextron_generations_total", "counter", "Finished generations.");
  counters("flextron_generations_total", generations_);
  header("flextron_prompt_tokens_total", "counter", "Prompt tokens prefilled.");
  counters("flextron_prompt_tokens_total", prompt_tokens_);
  header("flextron_generated_tokens_total", "counter", "Tokens generated.");
  counters("flextron_generated_tokens_total", completion_tokens_);
  const struct {
    const char* name;
    const char* help;
    const std::map<std::string, Histogram>& series;
  } per_budget[] = {
      {"flextron_request_duration_seconds", "Submission to last token.", latency_},
      {"flextron_queue_wait_seconds", "Submission to the start of prefill.", queue_},
      {"flextron_time_to_first_token_seconds", "Submission to first token.", first_token_},
      {"flextron_time_per_output_token_seconds", "Mean time between tokens after the first.",
       per_token_}};
  for (const auto& h : per_budget) {
    header(h.name, "histogram", h.help);
    for (const auto& [labels, values] : h.series) histogram(h.name, labels, values);
  }
  header("flextron_decode_batch_size", "histogram", "Sequences decoded in one engine step.");
  histogram("flextron_decode_batch_size", "", batch_);
  return out.str();
}

}  // namespace flextron::serve
