// CLI test fixtures shared by the CLI test files: stories260K imported through the CLI, and the
// shape of a good error (one line on stderr naming where and what, non-zero exit, no crash).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "route/latency.h"
#include "route/route_fixtures.h"
#include "test_util.h"

namespace flextron::testing {

// A path as one shell word for run_cli.
inline std::string quote(const std::filesystem::path& p) {
  return "'" + p.string() + "'";
}

// Imports stories260K into `dir` through the CLI.
inline std::filesystem::path import_stories(const std::filesystem::path& dir) {
  const auto out = dir / "stories";
  auto r = run_cli("import --from llama2c --model '" +
                   (shared_data() / "stories260K/stories260K.bin").string() + "' --tokenizer '" +
                   (shared_data() / "stories260K/tok512.bin").string() + "' --out '" +
                   out.string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Stories sampled from the model itself (dir/calibration.txt): in-distribution text for rank
// and train-router.
inline std::filesystem::path write_calibration_text(const std::filesystem::path& model,
                                                    const std::filesystem::path& dir) {
  std::string text;
  for (int seed = 1; seed <= 6; ++seed) {
    auto r = run_cli("generate --model " + quote(model) +
                     " --max-tokens 300 --temperature 1 --seed " + std::to_string(seed));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    text += r.out;
  }
  const auto path = dir / "calibration.txt";
  flextron::io::write_text_atomically(path, text);
  return path;
}

// One line on stderr that names `where`, non-zero exit.
inline void expect_one_line_error(const CliResult& r, const std::string& where,
                                  const std::string& what) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(where), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

// `model` ranked on `text`, with a latency table known in closed form (route_fixtures.h, so
// routing does not depend on this machine's timing) and static (and with `dynamic`, dynamic)
// routers trained briefly for budgets 0.5..1.0: `dir`/routed. `train_output` gets
// train-router's stdout.
struct RoutedModel {
  std::filesystem::path dir, text, ranked, routed;
};
inline RoutedModel build_routed_model(const std::filesystem::path& model,
                                      const std::filesystem::path& text,
                                      const std::filesystem::path& dir, bool dynamic,
                                      std::string* train_output = nullptr) {
  RoutedModel s;
  s.dir = dir;
  s.text = text;
  s.ranked = dir / "ranked";
  s.routed = dir / "routed";
  auto r = run_cli("rank --model " + quote(model) + " --data " + quote(s.text) + " --out " +
                   quote(s.ranked) + " --samples 8 --seq-len 64");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto loaded = io::load_model_dir(s.ranked);
  route::save_latency_table(s.ranked / "latency.json",
                            synthetic_table(loaded.model->config(), loaded.space));
  // The calibration text doubles as held-out text: this checks the plumbing, not quality.
  r = run_cli("train-router --model " + quote(s.ranked) + " --data " + quote(s.text) + " --val " +
              quote(s.text) + " --out " + quote(s.routed) +
              " --budgets 0.5,0.6,0.7,0.8,0.9,1.0 --steps 60 --sm-samples 16" +
              (dynamic ? " --dynamic --dynamic-steps 3" : "") +
              " --seq-len 64 --batch 2 --eval-windows 2");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (train_output != nullptr) *train_output = r.out;
  return s;
}

// stories260K (imported through the CLI, calibrated on its own samples), routed as above with
// both routers.
inline RoutedModel build_routed_stories(const std::filesystem::path& dir,
                                        std::string* train_output = nullptr) {
  const auto model = import_stories(dir);
  return build_routed_model(model, write_calibration_text(model, dir), dir, true, train_output);
}

}  // namespace flextron::testing
