// The GPT-2 family through every CLI stage: pretrain --family gpt2, convert (rank, elastic
// training, profile, routers, joint), generate at a budget with both routers, extract, export to
// HF and GGUF and back (the same greedy text as the elastic model at that budget), and a clear
// refusal where a format has no GPT-2 form (llama2.c).
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_fixtures.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::quote;
using flextron::testing::run_cli;

TEST(CliGpt2, EveryStageRunsOnAGpt2Model) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto corpus = flextron::testing::read_file(flextron::testing::shared_data() /
                                                   "corpora/tinyshakespeare.txt");
  const auto train = dir / "train.txt";
  flextron::io::write_text_atomically(train, corpus.substr(0, 300000));
  const auto base = dir / "base", flex = dir / "flex";
  auto r = run_cli("pretrain --family gpt2 --preset tiny --tokens 20480 --data " + quote(train) +
                   " --out " + quote(base));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto config = flextron::io::read_json_file(base / "config.json");
  EXPECT_EQ(config["model_type"], "gpt2");
  EXPECT_EQ(config["n_inner"], 4 * config["n_embd"].get<int64_t>());
  EXPECT_EQ(flextron::io::read_json_file(base / "training.json")["family"], "gpt2");
  // The weights are in HF GPT-2's layout.
  const auto stored = flextron::io::load_model_tensors(base);
  EXPECT_TRUE(stored.count("transformer.h.0.attn.c_attn.weight"));
  EXPECT_TRUE(stored.count("transformer.wpe.weight"));

  r = run_cli("convert --model " + quote(base) + " --data " + quote(train) + " --out " +
              quote(flex) +
              " --token-fraction 0.4 --seq-len 64 --batch 4 --rank-samples 16 "
              "--profile-repeats 3 --profile-check 2 --router-steps 30 --sm-samples 10 "
              "--dynamic-steps 4");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto record = flextron::io::read_json_file(flex / "convert.json");
  ASSERT_TRUE(record["done"].get<bool>());
  const auto budgets = record["budgets"].get<std::vector<double>>();
  ASSERT_GE(budgets.size(), 2u);
  const std::string low = std::to_string(budgets[budgets.size() / 2]);
  for (const char* router : {"static", "dynamic"}) {
    r = run_cli("generate --model " + quote(flex) + " --prompt 'KING' --max-tokens 8 --budget " +
                low + " --router " + router);
    EXPECT_EQ(r.exit_code, 0) << router << ": " << r.err;
  }

  // The sub-network at that budget, through HF and GGUF files: the same greedy text as the
  // elastic model choosing it.
  const std::string greedy = " --prompt 'KING' --max-tokens 24 --temperature 0";
  const auto elastic = run_cli("generate --model " + quote(flex) + greedy + " --budget " + low);
  ASSERT_EQ(elastic.exit_code, 0) << elastic.err;
  r = run_cli("extract --model " + quote(flex) + " --budget " + low + " --out " +
              quote(dir / "sub"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(flextron::io::read_json_file(dir / "sub/config.json")["model_type"], "gpt2");
  r = run_cli("export --model " + quote(dir / "sub") + " --to hf --out " + quote(dir / "hf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("HuggingFace GPT-2"), std::string::npos) << r.out;
  r = run_cli("import --from hf --model " + quote(dir / "hf") + " --out " + quote(dir / "hf_in"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("export --model " + quote(flex) + " --budget " + low + " --to gguf --out " +
              quote(dir / "sub.gguf"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("import --from gguf --model " + quote(dir / "sub.gguf") + " --out " +
              quote(dir / "gguf_in"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* copy : {"sub", "hf_in", "gguf_in"}) {
    r = run_cli("generate --model " + quote(dir / copy) + greedy);
    ASSERT_EQ(r.exit_code, 0) << copy << ": " << r.err;
    EXPECT_EQ(r.out, elastic.out) << copy;
  }

  r = run_cli("export --model " + quote(flex) + " --to llama2c --out " + quote(dir / "m.bin"));
  expect_one_line_error(r, "m.bin", "llama2.c only runs Llama-family models");
  r = run_cli("pretrain --family llama --preset tiny --config " + quote(dir / "sub/config.json") +
              " --data " + quote(train) + " --out " + quote(dir / "x"));
  expect_one_line_error(r, "--family", "disagrees with");
}

}  // namespace
