// flextron rank: score MLP neurons and KV groups on calibration text, permute every layer's units
// into descending importance (same function), and write the ranked model directory plus
// importance.json.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "device_options.h"
#include "number_options.h"
#include "train/rank_model.h"

namespace flextron::cli {

namespace {
struct RankArgs {
  std::string model;
  std::string data;
  std::string out;
  int64_t samples = 1024;
  int64_t seq_len = 256;
  std::string aggregation = "l2";
  int64_t batch = 8;
  bool json = false;
  DeviceArgs device;
};

// Largest score over the median score: how peaked a layer's importance is.
double peak_ratio(const torch::Tensor& scores) {
  const double median = scores.median().item<double>();
  return median > 0 ? scores.max().item<double>() / median : 0.0;
}

void run_rank(const RankArgs& a) {
  train::RankModelOptions o;
  o.model = a.model;
  o.data = a.data;
  o.out = a.out;
  o.samples = a.samples;
  o.seq_len = a.seq_len;
  o.aggregation = train::parse_aggregation(a.aggregation);
  o.batch = a.batch;
  o.load = a.device.load_options();
  const auto result = train::rank_model_dir(o);
  const auto& ranked = result.ranked;
  const auto& report = result.report;
  if (a.json) {
    std::printf("%s\n", report.dump(2).c_str());
    return;
  }
  std::printf("%-6s %-24s %-24s %s\n", "layer", "MLP max/median score", "KV group max/median",
              "KV group order");
  for (size_t l = 0; l < ranked.scores.mlp.size(); ++l) {
    std::string order;
    for (int64_t g : ranked.order.kv_groups[l]) order += std::to_string(g) + " ";
    std::printf("%-6zu %-24.2f %-24.2f %s\n", l, peak_ratio(ranked.scores.mlp[l]),
                peak_ratio(ranked.scores.kv_groups[l]), order.c_str());
  }
  std::printf("ranked %lld sequences x %lld tokens (%s) -> %s (importance.json, flextron.json)\n",
              static_cast<long long>(ranked.scores.sequences),
              static_cast<long long>(ranked.scores.seq_len), a.aggregation.c_str(), a.out.c_str());
}
}  // namespace

void register_rank(CLI::App& app) {
  auto a = std::make_shared<RankArgs>();
  auto* cmd = app.add_subcommand(
      "rank", "Sort MLP neurons and attention KV groups by importance (same function)");
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--data", a->data, "Calibration text (UTF-8)")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->add_option("--samples", a->samples, "Calibration sequences")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "Tokens per calibration sequence")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--aggregation", a->aggregation, "Over sequences: l2, mean or variance")
      ->capture_default_str();
  cmd->add_option("--batch", a->batch, "Sequences per forward pass")
      ->check(positive())
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the scores as JSON");
  a->device.add_to(cmd);
  cmd->callback([a] { run_rank(*a); });
}

}  // namespace flextron::cli
