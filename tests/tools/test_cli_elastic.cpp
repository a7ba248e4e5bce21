// The elastic commands end to end: space, rank, extract, and --arch on generate / perplexity.
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "test_util.h"
#include "tools/cli_fixtures.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::import_stories;
using flextron::testing::quote;
using flextron::testing::run_cli;
using flextron::testing::write_calibration_text;

nlohmann::json generate_json(const fs::path& model, const std::string& extra) {
  auto r = run_cli("generate --model " + quote(model) +
                   " --prompt 'Once upon a time' --max-tokens 40 --json " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

TEST(CliElastic, RankExtractAndGenerate) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = import_stories(dir);
  const auto text = write_calibration_text(model, dir);
  const auto ranked = dir / "ranked";
  flextron::io::write_text_atomically(model / "training.json", R"({"tokens": 1000})");
  auto r = run_cli("rank --model " + quote(model) + " --data " + quote(text) + " --out " +
                   quote(ranked) + " --samples 16 --seq-len 64");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ranked 16 sequences x 64 tokens (l2)"), std::string::npos) << r.out;
  auto importance = nlohmann::json::parse(flextron::testing::read_file(ranked / "importance.json"));
  EXPECT_EQ(importance["layers"].size(), 5u);
  EXPECT_EQ(importance["layers"][0]["mlp_scores"].size(), 172u);
  auto space = nlohmann::json::parse(flextron::testing::read_file(ranked / "flextron.json"));
  EXPECT_TRUE(space["ranked"].get<bool>());
  // The pretraining record travels with the ranked model (train-elastic --token-fraction).
  EXPECT_EQ(flextron::testing::read_file(ranked / "training.json"), R"({"tokens": 1000})");

  // Ranking keeps the full model's greedy output.
  EXPECT_EQ(generate_json(ranked, "")["tokens"], generate_json(model, "")["tokens"]);

  // The extracted model generates what the elastic model generates at that architecture.
  const std::string layers = "--arch-layers 'mlp:0.5,0.25,1,0.75,0.5;attn:1,0.5,0.25,1,0.75'";
  const auto extracted = dir / "extracted";
  r = run_cli("extract --model " + quote(ranked) + " " + layers + " --out " + quote(extracted));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mlp [88, 40, 172, 128, 88], attn [4, 2, 1, 4, 3]"), std::string::npos)
      << r.out;
  auto elastic_run = generate_json(ranked, layers);
  EXPECT_EQ(generate_json(extracted, "")["tokens"], elastic_run["tokens"]);
  EXPECT_EQ(elastic_run["architecture"]["layers"][1]["mlp"], 40);
  EXPECT_LT(fs::file_size(extracted / "model.safetensors"),
            fs::file_size(ranked / "model.safetensors"));

  // perplexity at a sub-network names it.
  r = run_cli("perplexity --model " + quote(ranked) + " --data " + quote(text) +
              " --ctx 64 --arch mlp=0.5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(nlohmann::json::parse(r.out)["architecture"].get<std::string>().find("mlp 88/172"),
            std::string::npos);
}

TEST(CliElastic, SpaceShowsAndWritesTheGrid) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  auto r = run_cli("space --model " + quote(model) + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["mlp_widths"][0],
            nlohmann::json({40, 64, 88, 104, 128, 152, 172}));
  r = run_cli("space --model " + quote(model) +
              " --mlp-fractions 0.5,1 --attn-fractions 0.5 --write");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The new space rules what --arch accepts.
  r = run_cli("generate --model " + quote(model) + " --max-tokens 2 --arch mlp=0.75");
  expect_one_line_error(r, "mlp=0.75",
                        "MLP width 128 is not in the elastic space (allowed: 88, 172)");
  r = run_cli("generate --model " + quote(model) + " --max-tokens 2 --arch mlp=0.5,attn=0.5");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(CliElastic, BadArchitecturesAndSpacesAreOneLineErrors) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = import_stories(dir);
  const std::string gen = "generate --model " + quote(model) + " --max-tokens 2 ";
  expect_one_line_error(run_cli(gen + "--arch mlp=0.55"), "mlp=0.55", "not in the elastic space");
  expect_one_line_error(run_cli(gen + "--arch-layers 'mlp:0.5,0.5'"), "mlp:0.5,0.5",
                        "mlp lists 2 widths, the model has 5 layers");
  expect_one_line_error(run_cli(gen + "--arch attn=8"), "attn=8", "outside [1, 4]");
  expect_one_line_error(run_cli("extract --model " + quote(model) + " --out " + quote(dir / "x")),
                        "extract", "--arch");
  flextron::io::write_text_atomically(model / "flextron.json", "{\"format\": ");
  expect_one_line_error(run_cli(gen), (model / "flextron.json").string(), "invalid JSON");
  flextron::io::write_text_atomically(
      model / "flextron.json",
      R"({"format": "flextron-elastic-space", "version": 1, "mlp_widths": [64, 172],
          "attention_kv_groups": [[1, 2], [4], [4], [4], [4], [4]]})");
  expect_one_line_error(run_cli(gen), "flextron.json", "lists 5 MLP and 6 attention layers");
}

}  // namespace
