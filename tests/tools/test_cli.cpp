// The flextron CLI end to end on stories260K: import, generation against llama2.c's output,
// lossless round trips through every format, and one-line errors for bad input.
#include <cstring>
#include <fstream>
#include <utility>

#include <torch/torch.h>

#include "io/model_dir.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "tools/cli_fixtures.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::import_stories;
using flextron::testing::read_file;
using flextron::testing::run_cli;
using flextron::testing::shared_data;

void expect_same_tensors(const fs::path& a, const fs::path& b) {
  auto ta = flextron::io::load_model_tensors(a);
  auto tb = flextron::io::load_model_tensors(b);
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, tb.at(name))) << name;  // bit-identical
  }
}

TEST(Cli, GreedyFromBosPrintsExactlyTheReference) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  // run.c -n 200 runs 200 forwards (positions 0..199), each printing the token it predicts.
  auto r = run_cli("generate --model '" + model.string() +
                   "' --prompt '' --max-tokens 200 --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, read_file(shared_data() / "stories260K/reference_bos_greedy200.txt"));
  EXPECT_NE(r.err.find("tok/s"), std::string::npos);
}

TEST(Cli, GenerateJsonHasTokensAndTimings) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  auto r = run_cli("generate --model '" + model.string() +
                   "' --prompt 'Once upon a time' --max-tokens 20 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"].get<std::vector<int64_t>>(),
            (std::vector<int64_t>{1, 403, 407, 261, 378}));
  auto ref = nlohmann::json::parse(
      read_file(shared_data() / "stories260K/reference_once_upon_a_time.json"));
  auto expected = ref["greedy_continuation"].get<std::vector<int64_t>>();
  expected.resize(20);
  EXPECT_EQ(j["tokens"].get<std::vector<int64_t>>(), expected);
  EXPECT_GT(j["timings"]["decode_tokens_per_second"].get<double>(), 0.0);
}

TEST(Cli, SampledGenerationIsReproducibleFromSeed) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  const std::string cmd = "generate --model '" + model.string() +
                          "' --max-tokens 40 --temperature 0.9 --top-p 0.9 --json --seed ";
  auto a = nlohmann::json::parse(run_cli(cmd + "7").out);
  auto b = nlohmann::json::parse(run_cli(cmd + "7").out);
  auto c = nlohmann::json::parse(run_cli(cmd + "8").out);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_NE(a["tokens"], c["tokens"]);
}

// --speculative gives plain greedy decoding's tokens, at a named draft and at the one chosen by
// calibration, and reports its rounds; the draft options' mistakes are one-line errors.
TEST(Cli, SpeculativeGenerationIsPlainGreedyDecoding) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  const std::string cmd = "generate --model '" + model.string() +
                          "' --prompt 'Once upon a time' --max-tokens 120 --temperature 0 --json";
  auto plain = run_cli(cmd);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const auto want = nlohmann::json::parse(plain.out)["tokens"];
  for (const std::string draft :
       {" --draft-arch mlp=0.25,attn=0.5", " --draft-arch mlp=0.5 --draft-tokens 3", ""}) {
    SCOPED_TRACE(draft);
    auto r = run_cli(cmd + " --speculative" + draft);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tokens"], want);
    ASSERT_TRUE(j.contains("speculative")) << r.out;
    EXPECT_GT(j["speculative"]["rounds"].get<int64_t>(), 0);
    EXPECT_FALSE(j["speculative"]["draft"].get<std::string>().empty()) << r.out;
    if (draft.empty()) {
      EXPECT_EQ(j["speculative"]["trials"].size(), 3u) << r.out;  // calibrated
    }
  }
  auto shown = run_cli(cmd.substr(0, cmd.size() - 7) + " --speculative --draft-arch mlp=0.5");
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.err.find("draft: mlp=0.5"), std::string::npos) << shown.err;
  EXPECT_NE(shown.err.find("speculative:"), std::string::npos) << shown.err;
  expect_one_line_error(run_cli(cmd + " --draft-arch mlp=0.5"), "--draft-arch", "--speculative");
  expect_one_line_error(run_cli(cmd + " --speculative --draft-tokens 17"), "--draft-tokens", "16");
  expect_one_line_error(run_cli(cmd + " --speculative --draft-arch mlp=1.5"), "--draft-arch",
                        "mlp");
  expect_one_line_error(run_cli(cmd + " --speculative --draft-budget 0.4"), "--draft-budget",
                        "latency");
}

TEST(Cli, RoundTripsThroughHfAndLlama2cAreLossless) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = import_stories(dir);
  // hf: export, re-import.
  ASSERT_EQ(run_cli("export --model '" + model.string() + "' --to hf --out '" +
                    (dir / "hf").string() + "'")
                .exit_code,
            0);
  ASSERT_EQ(run_cli("import --from hf --model '" + (dir / "hf").string() + "' --out '" +
                    (dir / "from_hf").string() + "'")
                .exit_code,
            0);
  expect_same_tensors(model, dir / "from_hf");
  // llama2c: export, re-import; the re-exported file is byte-identical to the first export.
  auto r = run_cli("export --model '" + model.string() + "' --to llama2c --out '" +
                   (dir / "l2c/model.bin").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(run_cli("import --from llama2c --model '" + (dir / "l2c/model.bin").string() +
                    "' --tokenizer '" + (dir / "l2c/tokenizer.bin").string() + "' --out '" +
                    (dir / "from_l2c").string() + "'")
                .exit_code,
            0);
  expect_same_tensors(model, dir / "from_l2c");
  ASSERT_EQ(run_cli("export --model '" + (dir / "from_l2c").string() + "' --to llama2c --out '" +
                    (dir / "again.bin").string() + "'")
                .exit_code,
            0);
  EXPECT_EQ(read_file(dir / "l2c/model.bin"), read_file(dir / "again.bin"));
  // The weights in the original file are reproduced exactly (only the RoPE tables, which we
  // recompute, may differ in the last bits): compare everything before the tables.
  const auto original = read_file(shared_data() / "stories260K/stories260K.bin");
  const auto exported = read_file(dir / "l2c/model.bin");
  ASSERT_EQ(original.size(), exported.size());
  const size_t rope_bytes = 512 * 8 * 4;  // seq_len * head_dim * sizeof(float), cos + sin
  EXPECT_EQ(original.substr(0, original.size() - rope_bytes),
            exported.substr(0, exported.size() - rope_bytes));
  // Same outputs from every copy.
  const std::string gen = "' --max-tokens 30 --temperature 0 --json";
  auto base = nlohmann::json::parse(run_cli("generate --model '" + model.string() + gen).out);
  for (const char* copy : {"from_hf", "from_l2c"})
    EXPECT_EQ(nlohmann::json::parse(
                  run_cli("generate --model '" + (dir / copy).string() + gen).out)["tokens"],
              base["tokens"]);
}

// ----- bad input: one-line errors naming the file and the problem -------------------------------
class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(shared_data() / "README.md")) GTEST_SKIP() << "../shared/data not found";
    dir_ = flextron::testing::scratch_dir();
    model_ = import_stories(dir_);
    weights_ = model_ / "model.safetensors";
    bytes_ = read_file(weights_);
  }
  void write_weights(const std::string& bytes) {
    std::ofstream(weights_, std::ios::binary) << bytes;
  }
  flextron::testing::CliResult generate() {
    return run_cli("generate --model '" + model_.string() + "' --max-tokens 2");
  }
  fs::path dir_, model_, weights_;
  std::string bytes_;
};

TEST_F(CliBadInput, TruncatedSafetensors) {
  write_weights(bytes_.substr(0, bytes_.size() - 100));
  expect_one_line_error(generate(), weights_.string(), "truncated");
}

TEST_F(CliBadInput, HeaderLengthLargerThanFile) {
  std::string b = bytes_;
  const uint64_t huge = 1ull << 40;
  std::memcpy(b.data(), &huge, 8);
  write_weights(b);
  expect_one_line_error(generate(), weights_.string(), "header");
}

TEST_F(CliBadInput, HeaderIsNotJson) {
  std::string b = bytes_;
  b[8] = '#';  // the '{' that opens the JSON header
  write_weights(b);
  expect_one_line_error(generate(), weights_.string(), "JSON");
}

TEST_F(CliBadInput, TensorShapeDisagreesWithConfig) {
  auto config = nlohmann::json::parse(read_file(model_ / "config.json"));
  config["intermediate_size"] = 200;
  std::ofstream(model_ / "config.json") << config.dump();
  expect_one_line_error(generate(), weights_.string(), "shape");
}

TEST_F(CliBadInput, MissingTensor) {
  auto tensors = flextron::io::load_safetensors(weights_);
  tensors.erase("model.layers.3.mlp.up_proj.weight");
  flextron::io::save_safetensors(weights_, tensors);
  expect_one_line_error(generate(), weights_.string(),
                        "missing tensor 'model.layers.3.mlp.up_proj.weight'");
}

TEST_F(CliBadInput, Llama2cSizeDisagreesWithHeader) {
  auto bin = read_file(shared_data() / "stories260K/stories260K.bin");
  const auto bad = dir_ / "short.bin";
  std::ofstream(bad, std::ios::binary) << bin.substr(0, bin.size() - 4);
  auto r = run_cli("import --from llama2c --model '" + bad.string() + "' --out '" +
                   (dir_ / "x").string() + "'");
  expect_one_line_error(r, bad.string(), "header implies");
}

TEST_F(CliBadInput, InvalidConfigJson) {
  std::ofstream(model_ / "config.json") << "{\"hidden_size\": 64,";
  expect_one_line_error(generate(), (model_ / "config.json").string(), "invalid JSON");
}

TEST_F(CliBadInput, PromptLongerThanContext) {
  std::string prompt;
  for (int i = 0; i < 600; ++i) prompt += "Lily ";
  auto r = run_cli("generate --model '" + model_.string() + "' --prompt '" + prompt + "'");
  expect_one_line_error(r, "prompt", "context");
}

TEST_F(CliBadInput, SamplingOptionsOutOfRange) {
  auto r = run_cli("generate --model '" + model_.string() + "' --top-p 1.5");
  expect_one_line_error(r, "--top-p", "(0, 1]");
}

// Off-by-one header length, bytes after the last tensor, integer dtype for a float weight: each
// named, none read as weights.
TEST_F(CliBadInput, HeaderLengthOffByOne) {
  std::string b = bytes_;
  uint64_t length = 0;
  std::memcpy(&length, b.data(), 8);
  ++length;
  std::memcpy(b.data(), &length, 8);
  write_weights(b);
  expect_one_line_error(generate(), weights_.string(), "");
}

TEST_F(CliBadInput, TrailingBytesAfterTheTensors) {
  write_weights(bytes_ + std::string(1000, '\x7f'));
  expect_one_line_error(generate(), weights_.string(), "cover");
}

TEST_F(CliBadInput, FloatWeightsLabelledAsIntegers) {
  std::string b = bytes_;
  const auto at = b.find("\"F32\"");
  ASSERT_NE(at, std::string::npos);
  b.replace(at, 5, "\"I32\"");
  write_weights(b);
  expect_one_line_error(generate(), weights_.string(), "floating point");
}

TEST_F(CliBadInput, ImplausibleLayerCountInConfig) {
  auto config = nlohmann::json::parse(read_file(model_ / "config.json"));
  config["num_hidden_layers"] = 9223372036854775807LL;
  std::ofstream(model_ / "config.json") << config.dump();
  expect_one_line_error(generate(), "config.json", "implausibly large");
  expect_one_line_error(run_cli("info --model '" + model_.string() + "'"), "config.json",
                        "implausibly large");
}

// Within the bounds but far more than the file holds: refused before the model is allocated.
TEST_F(CliBadInput, ConfigFarLargerThanTheWeights) {
  auto config = nlohmann::json::parse(read_file(model_ / "config.json"));
  config["num_hidden_layers"] = 60;
  std::ofstream(model_ / "config.json") << config.dump();
  expect_one_line_error(generate(), "config.json", "does not belong to these weights");
}

TEST_F(CliBadInput, HugeMaxTokensStopsAtTheContext) {
  auto r = run_cli("generate --model '" + model_.string() +
                   "' --max-tokens 9223372036854775807 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto tokens = nlohmann::json::parse(r.out)["tokens"];
  EXPECT_GT(tokens.size(), 0u);
  EXPECT_LE(tokens.size(), 512u);  // stories260K's context
}

TEST_F(CliBadInput, ArchWidthTooLarge) {
  auto r = run_cli("generate --model '" + model_.string() + "' --arch mlp=1e30 --max-tokens 2");
  expect_one_line_error(r, "mlp", "");
}

// Numbers on the command line: every option refuses zero / negative / overflowing / non-finite
// values where they mean nothing, in one line naming the option, before any work starts.
TEST(CliNumbers, BadNumbersAreOneLineErrorsNamingTheOption) {
  const std::string train = "pretrain --data /nonexistent.txt --out /nonexistent-out ";
  const std::pair<std::string, std::string> cases[] = {
      {train + "--tokens 0", "--tokens"},
      {train + "--tokens -5", "--tokens"},
      {train + "--tokens 99999999999999999999", "--tokens"},
      {train + "--tokens 1e3", "--tokens"},
      {train + "--checkpoint-every 0", "--checkpoint-every"},
      {train + "--threads -3", "--threads"},
      {"generate --model /nonexistent --temperature inf", "--temperature"},
      {"generate --model /nonexistent --temperature nan", "--temperature"},
      {"generate --model /nonexistent --max-tokens 12abc", "--max-tokens"},
      {"serve --model /nonexistent --port 70000", "--port"},
  };
  for (const auto& [command, option] : cases) {
    SCOPED_TRACE(command);
    expect_one_line_error(run_cli(command), option, "");
  }
}

}  // namespace
