#include "train/rank_model.h"

#include <chrono>
#include <cstdio>

#include <torch/torch.h>

#include "core/error.h"
#include "core/progress_line.h"
#include "io/atomic_file.h"
#include "text/utf8.h"
#include "train/progress.h"

namespace flextron::train {

namespace fs = std::filesystem;

RankModelResult rank_model_dir(const RankModelOptions& o) {
  const std::string text = text::read_utf8_file(o.data);
  auto loaded = io::load_model_dir(o.model, o.load);
  if (!loaded.tokenizer) fail(o.model.string(), "no tokenizer in this model directory");
  const auto& config = loaded.model->config();
  if (o.seq_len > config.max_position_embeddings)
    fail("--seq-len", std::to_string(o.seq_len) + " exceeds the model's context " +
                          std::to_string(config.max_position_embeddings));
  const auto windows = calibration_windows(loaded.tokenizer->encode(text, true), o.seq_len,
                                           o.samples, o.data.string());
  if (windows.size(0) < o.samples)
    std::fprintf(stderr,
                 "note: %s holds %lld windows of %lld tokens; ranking on those instead of %lld\n",
                 o.data.c_str(), static_cast<long long>(windows.size(0)),
                 static_cast<long long>(o.seq_len), static_cast<long long>(o.samples));

  ImportanceOptions options;
  options.aggregation = o.aggregation;
  options.batch = o.batch;
  const auto start = std::chrono::steady_clock::now();
  ProgressLine line;
  options.on_progress = [&](int64_t done, int64_t total) {
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(done * o.seq_len) / std::max(s, 1e-9);
    line.updatef("rank: %lld/%lld sequences, %.0f tok/s, ETA %s", static_cast<long long>(done),
                 static_cast<long long>(total), rate,
                 format_duration(static_cast<double>((total - done) * o.seq_len) / rate).c_str());
    if (done == total) line.finish();
  };
  RankModelResult result;
  result.ranked = rank_by_importance(*loaded.model, windows, options);
  line.finish();

  loaded.space.ranked = true;
  io::save_model_dir(o.out, *loaded.model, loaded.tokenizer.get(), &loaded.space);
  // Same function, same history: train-elastic --token-fraction reads the pretraining budget.
  const auto history = o.model / "training.json";
  if (fs::exists(history))
    fs::copy_file(history, o.out / "training.json", fs::copy_options::overwrite_existing);
  result.report = importance_to_json(result.ranked.scores, result.ranked.order);
  result.report["model"] = o.model.string();
  result.report["data"] = o.data.string();
  // Written last: its presence says the ranked directory is complete.
  io::write_text_atomically(o.out / "importance.json", result.report.dump(1) + "\n");
  return result;
}

}  // namespace flextron::train
