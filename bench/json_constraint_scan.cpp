// What structured output costs per generated token: the vocabulary scan that decides which
// tokens keep the JSON valid (runtime/json_constraint.h), timed on real vocabularies in the
// states that matter (just opened an object, inside a string where nearly every token fits,
// inside a number where few do), median of interleaved rounds. Compare with a decode step's
// time from bench/runtime_speed.sh for the same model.
//
// usage: json_constraint_scan [--rounds 21] [--json FILE] NAME=TOKENIZER_PATH...
//   TOKENIZER_PATH: tokenizer.bin (llama2.c, vocab 512 assumed: stories260K's tok512.bin), or
//   any file `flextron` reads a tokenizer from (tokenizer.model, tokenizer.json, a GGUF).
// Prints a table and writes JSON (default bench_json_constraint_scan.json).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/gguf_tokenizer.h"
#include "runtime/json_constraint.h"
#include "runtime/json_grammar.h"
#include "text/tokenizer.h"

namespace {

using flextron::runtime::JsonConstraint;
using flextron::runtime::JsonGrammar;
using nlohmann::json;

std::unique_ptr<flextron::text::Tokenizer> load(const std::string& path) {
  if (path.size() > 4 && path.substr(path.size() - 4) == ".bin")
    return flextron::text::load_llama2c_tokenizer(path, 512);
  return flextron::io::load_tokenizer_path(path);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 21;
  std::string json_path = "bench_json_constraint_scan.json";
  std::vector<std::pair<std::string, std::string>> vocabularies;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--rounds") && i + 1 < argc) {
      rounds = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      json_path = argv[++i];
    } else if (const char* eq = std::strchr(argv[i], '='); eq != nullptr) {
      vocabularies.push_back({std::string(argv[i], static_cast<size_t>(eq - argv[i])), eq + 1});
    } else {
      std::fprintf(stderr, "usage: json_constraint_scan [--rounds N] [--json FILE] NAME=PATH...\n");
      return 2;
    }
  }
  if (vocabularies.empty()) {
    std::fprintf(stderr, "json_constraint_scan: give at least one NAME=TOKENIZER_PATH\n");
    return 2;
  }
  const auto schema = json::parse(R"({"type":"object","properties":{
      "name":{"type":"string"},"age":{"type":"integer"},
      "tags":{"type":"array","items":{"type":"string"}}},"required":["name","age","tags"]})");
  const auto grammar = JsonGrammar::from_schema(schema, "schema");
  // Each state: the output so far.
  const std::vector<std::pair<std::string, std::string>> states = {
      {"after {", "{"},
      {"in a string", R"({"name":"Bo)"},
      {"in a number", R"({"name":"B","age":4)"}};

  json results = json::array();
  std::printf("%-12s %7s  %-12s %10s %8s\n", "vocabulary", "tokens", "state", "scan us", "allowed");
  for (const auto& [name, path] : vocabularies) {
    std::unique_ptr<flextron::text::Tokenizer> tokenizer;
    try {
      tokenizer = load(path);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "json_constraint_scan: %s\n", e.what());
      return 1;
    }
    auto vocab = std::make_shared<flextron::runtime::VocabularyBytes>(*tokenizer);
    std::vector<JsonConstraint> constraints;
    for (const auto& [label, prefix] : states) {
      JsonConstraint c(vocab, grammar, "bench");
      // Reach the state byte by byte through one-byte tokens.
      for (char ch : prefix)
        for (int64_t id = 0; id < vocab->size(); ++id)
          if (vocab->bytes(id) == std::string(1, ch)) {
            c.accept(id);
            break;
          }
      constraints.push_back(c);
    }
    std::vector<std::vector<double>> times(states.size());
    std::vector<uint8_t> allowed(static_cast<size_t>(tokenizer->vocab_size()));
    std::vector<int64_t> counts(states.size());
    for (int r = 0; r < rounds; ++r)
      for (size_t s = 0; s < states.size(); ++s) {
        const auto t0 = std::chrono::steady_clock::now();
        constraints[s].allowed(1000, allowed);
        times[s].push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count());
        counts[s] = std::count(allowed.begin(), allowed.end(), 1);
      }
    for (size_t s = 0; s < states.size(); ++s) {
      const double us = median(times[s]);
      std::printf("%-12s %7lld  %-12s %10.1f %8lld\n", name.c_str(),
                  static_cast<long long>(tokenizer->vocab_size()), states[s].first.c_str(), us,
                  static_cast<long long>(counts[s]));
      results.push_back({{"vocabulary", name},
                         {"tokens", tokenizer->vocab_size()},
                         {"state", states[s].first},
                         {"scan_us_median", us},
                         {"allowed", counts[s]}});
    }
  }
  std::ofstream(json_path) << json({{"rounds", rounds}, {"results", results}}).dump(2) << "\n";
  return 0;
}
