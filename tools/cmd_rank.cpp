// flextron rank: score MLP neurons and KV groups on calibration text, permute every layer's units
// into descending importance (same function), and write the ranked model directory plus
// importance.json.
#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "device_options.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "text/utf8.h"
#include "train/importance.h"
#include "train/progress.h"

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
  const auto aggregation = train::parse_aggregation(a.aggregation);
  const std::string text = text::read_utf8_file(a.data);
  auto loaded = io::load_model_dir(a.model, a.device.load_options());
  if (!loaded.tokenizer) fail(a.model, "no tokenizer in this model directory");
  const auto& config = loaded.model->config();
  if (a.seq_len > config.max_position_embeddings)
    fail("--seq-len", std::to_string(a.seq_len) + " exceeds the model's context " +
                          std::to_string(config.max_position_embeddings));
  const auto windows = train::calibration_windows(loaded.tokenizer->encode(text, true), a.seq_len,
                                                  a.samples, a.data);
  if (windows.size(0) < a.samples)
    std::cerr << "note: " << a.data << " holds " << windows.size(0) << " windows of " << a.seq_len
              << " tokens; ranking on those instead of " << a.samples << "\n";

  train::ImportanceOptions options;
  options.aggregation = aggregation;
  options.batch = a.batch;
  const auto start = std::chrono::steady_clock::now();
  options.on_progress = [&](int64_t done, int64_t total) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(done * a.seq_len) / std::max(s, 1e-9);
    std::fprintf(
        stderr, "\rrank: %lld/%lld sequences, %.0f tok/s, ETA %s   ", static_cast<long long>(done),
        static_cast<long long>(total), rate,
        train::format_duration(static_cast<double>((total - done) * a.seq_len) / rate).c_str());
    if (done == total) std::fprintf(stderr, "\n");
  };
  const auto ranked = train::rank_by_importance(*loaded.model, windows, options);

  loaded.space.ranked = true;
  io::save_model_dir(a.out, *loaded.model, loaded.tokenizer.get(), &loaded.space);
  // Same function, same history: train-elastic --token-fraction reads the pretraining budget.
  const auto history = std::filesystem::path(a.model) / "training.json";
  if (std::filesystem::exists(history))
    std::filesystem::copy_file(history, std::filesystem::path(a.out) / "training.json",
                               std::filesystem::copy_options::overwrite_existing);
  auto report = train::importance_to_json(ranked.scores, ranked.order);
  report["model"] = a.model;
  report["data"] = a.data;
  io::write_text_atomically(std::filesystem::path(a.out) / "importance.json",
                            report.dump(1) + "\n");
  if (a.json) {
    std::cout << report.dump(2) << "\n";
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
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seq-len", a->seq_len, "Tokens per calibration sequence")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--aggregation", a->aggregation, "Over sequences: l2, mean or variance")
      ->capture_default_str();
  cmd->add_option("--batch", a->batch, "Sequences per forward pass")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--json", a->json, "Print the scores as JSON");
  a->device.add_to(cmd);
  cmd->callback([a] { run_rank(*a); });
}

}  // namespace flextron::cli
