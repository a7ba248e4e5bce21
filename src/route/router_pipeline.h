// flextron train-router as a library call: from an elastically trained model directory with its
// latency table to the same model with trained routers and the budget table.
//  1. surrogate: the held-out loss of architectures spread over the space, an SM fitted to them;
//  2. static router against SM + latency (route/static_router.h);
//  3. with `dynamic`: the dynamic router with the LLM frozen (route/routed_training.h);
//  4. with `joint`: LLM and routers fine-tuned together on the true loss for `joint_tokens`;
//  5. the budget table on a 0.01 grid, written with the routers into `out`.
// With `reuse`, steps 1-3 are taken from the routers already in `model` (its router.json), so a
// joint fine-tune can follow a router run as a separate, cached stage (flextron convert).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "route/latency.h"

namespace flextron::route {

struct RouterPipelineOptions {
  std::filesystem::path model;    // elastic model directory
  std::filesystem::path latency;  // default: model/latency.json
  std::vector<std::filesystem::path> data;
  std::vector<std::filesystem::path> val;
  std::filesystem::path out;
  std::vector<double> budgets{0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
  int64_t router_steps = 400;
  int64_t surrogate_samples = 64;
  double latency_weight = 10.0;
  bool dynamic = false;
  int64_t dynamic_steps = 100;
  bool reuse = false;  // start from model/router.json instead of training steps 1-3
  bool joint = false;
  int64_t joint_tokens = 0;
  int64_t seq_len = 256;
  int64_t batch = 4;
  int64_t eval_windows = 8;  // held-out windows per surrogate measurement
  uint64_t seed = 1234;
  int threads = 0;
};

// Writes `out` (model, tokenizer, flextron.json, latency.json, router.json, router.safetensors)
// and returns the report that router.json carries. Throws flextron::Error for bad input.
nlohmann::json train_routers(const RouterPipelineOptions& options);

// Parses "0.4,0.5,..." (fractions in (0, 1], ascending after sorting, distinct).
std::vector<double> parse_budget_list(const std::string& text, const std::string& where);

// The latency fraction of the table's narrowest architecture: no budget below it is reachable.
double smallest_latency_fraction(const LatencyTable& table);
// `count` budgets evenly spaced from the smallest reachable fraction (rounded up to 0.01) to 1:
// what to train routers for when the user names none (how low a model can go depends on the
// machine: per-operation overhead is a floor that no width reduction removes).
std::vector<double> feasible_budget_grid(const LatencyTable& table, int count = 6);

}  // namespace flextron::route
