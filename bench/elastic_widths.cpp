// Does a sub-network cost what its size says? Times a training step (forward + backward) and a
// decode step at uniform MLP/attention widths 25/50/75/100% of one model, interleaved round by
// round so machine noise hits every width alike, and compares the median time ratio to the full
// width with the FLOP ratio (model::forward_macs_per_token).
//
// usage: elastic_widths [--preset small] [--model DIR] [--rounds 7] [--threads N] [--json FILE]
// Prints a table and writes JSON (default bench_elastic_widths.json).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/timing.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "runtime/allocator.h"
#include "runtime/threads.h"
#include "train/presets.h"

namespace fm = flextron::model;

namespace {

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Width {
  double fraction;
  fm::Architecture arch;
  std::vector<double> train_s, decode_s;
};

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "small", model_dir, json_path = "bench_elastic_widths.json";
  int rounds = 7, threads = 0, batch = 0, seq_len = 0, decode_tokens = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--preset")
      preset = value;
    else if (flag == "--model")
      model_dir = value;
    else if (flag == "--rounds")
      rounds = std::stoi(value);
    else if (flag == "--threads")
      threads = std::stoi(value);
    else if (flag == "--batch")
      batch = std::stoi(value);
    else if (flag == "--seq-len")
      seq_len = std::stoi(value);
    else if (flag == "--json")
      json_path = value;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  flextron::runtime::use_threads(threads);
  // As the CLI does (FLEXTRON_MALLOC_TUNING=0 measures glibc's defaults).
  const bool malloc_tuned = flextron::runtime::keep_freed_memory();

  // The preset's shape and batch; weights from --model, else random (timing does not depend on
  // the values).
  const auto& p = flextron::train::find_preset(preset);
  fm::Transformer model{nullptr};
  if (!model_dir.empty()) {
    flextron::io::LoadOptions o;
    o.with_tokenizer = false;
    model = flextron::io::load_model_dir(model_dir, o).model;
  } else {
    model = fm::Transformer(p.config);
  }
  const auto& config = model->config();
  if (batch == 0) batch = static_cast<int>(p.micro_batch);
  if (seq_len == 0) seq_len = static_cast<int>(std::min(p.seq_len, config.max_position_embeddings));
  const auto space = fm::default_elastic_space(config);

  std::vector<Width> widths;
  for (double f : {0.25, 0.5, 0.75, 1.0}) {
    char text[64];
    std::snprintf(text, sizeof(text), "mlp=%g,attn=%g", f, f);
    widths.push_back({f, fm::parse_architecture(text, config, space), {}, {}});
  }

  torch::manual_seed(0);
  auto tokens = torch::randint(3, config.vocab_size, {batch, seq_len + 1}, torch::kLong);
  auto inputs = tokens.narrow(1, 0, seq_len), targets = tokens.narrow(1, 1, seq_len);
  auto train_step = [&](const fm::Architecture& arch) {
    model->train();
    model->zero_grad();
    auto logits = model->forward(inputs, nullptr, &arch);
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, config.vocab_size}),
                                                     targets.reshape({-1}));
    loss.backward();
  };
  // Decode: one prompt token, then decode_tokens single-token steps (batch 1, KV cache).
  auto decode = [&](const fm::Architecture& arch) {
    c10::InferenceMode guard;
    model->eval();
    auto cache = model->make_cache(1, decode_tokens + 1, &arch);
    auto next = torch::full({1, 1}, 1, torch::kLong);
    model->forward(next, &cache, &arch);
    return seconds([&] {
      for (int t = 0; t < decode_tokens; ++t) {
        next = model->forward(next, &cache, &arch).select(1, 0).argmax(-1, true);
      }
    });
  };

  std::fprintf(stderr, "warming up...\n");
  for (auto& w : widths) {
    train_step(w.arch);
    decode(w.arch);
  }
  for (int r = 0; r < rounds; ++r) {
    for (auto& w : widths) {
      w.train_s.push_back(seconds([&] { train_step(w.arch); }));
      w.decode_s.push_back(decode(w.arch) / decode_tokens);
    }
    std::fprintf(stderr, "round %d/%d\n", r + 1, rounds);
  }

  const auto& full = widths.back();
  const double full_train = flextron::median(full.train_s),
               full_decode = flextron::median(full.decode_s);
  const double full_train_macs = fm::forward_macs_per_token(config, full.arch, seq_len / 2);
  const double full_decode_macs = fm::forward_macs_per_token(config, full.arch, decode_tokens / 2);
  nlohmann::json out = {{"preset", preset},
                        {"model", model_dir.empty() ? "random init" : model_dir},
                        {"threads", torch::get_num_threads()},
                        {"malloc_tuned", malloc_tuned},
                        {"rounds", rounds},
                        {"train_batch", batch},
                        {"train_seq_len", seq_len},
                        {"decode_tokens", decode_tokens},
                        {"widths", nlohmann::json::array()}};
  std::printf("%s (%s), %d threads, malloc %s, median of %d interleaved rounds\n", preset.c_str(),
              model_dir.empty() ? "random init" : model_dir.c_str(), torch::get_num_threads(),
              malloc_tuned ? "tuned" : "glibc defaults", rounds);
  std::printf("%-6s %-34s %10s %8s %8s %10s %8s %8s\n", "width", "architecture", "train ms",
              "ratio", "FLOPs", "decode ms", "ratio", "FLOPs");
  for (const auto& w : widths) {
    const double train = flextron::median(w.train_s), dec = flextron::median(w.decode_s);
    const double train_flops =
        fm::forward_macs_per_token(config, w.arch, seq_len / 2) / full_train_macs;
    const double decode_flops =
        fm::forward_macs_per_token(config, w.arch, decode_tokens / 2) / full_decode_macs;
    std::printf("%-6.2f %-34s %10.2f %8.3f %8.3f %10.3f %8.3f %8.3f\n", w.fraction,
                fm::describe_architecture(w.arch, config).c_str(), 1e3 * train, train / full_train,
                train_flops, 1e3 * dec, dec / full_decode, decode_flops);
    out["widths"].push_back({{"fraction", w.fraction},
                             {"architecture", fm::architecture_to_json(w.arch)},
                             {"train_step_seconds", w.train_s},
                             {"train_median_seconds", train},
                             {"train_time_ratio", train / full_train},
                             {"train_flop_ratio", train_flops},
                             {"decode_token_seconds", w.decode_s},
                             {"decode_median_seconds", dec},
                             {"decode_time_ratio", dec / full_decode},
                             {"decode_flop_ratio", decode_flops}});
  }
  std::ofstream(json_path) << out.dump(2) << "\n";
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}
