// flextron convert and eval end to end on the ~1M-parameter test preset with a tiny token budget:
// the stages run, are cached and resume (a stop after stage 2, then after stage 3, then the rest:
// finished stages are skipped, their files untouched), a changed router setting reruns only the
// router stages, and the report has one row per budget and router kind plus the baseline.
#include <filesystem>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_fixtures.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::quote;
using flextron::testing::run_cli;

std::string tail_of(const std::string& s, size_t n) {
  return s.size() > n ? s.substr(s.size() - n) : s;
}

TEST(CliConvert, StagesAreCachedAndTheReportCoversEveryBudgetAndRouter) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto corpus = flextron::testing::read_file(flextron::testing::shared_data() /
                                                   "corpora/tinyshakespeare.txt");
  const auto train = dir / "train.txt", held = dir / "held.txt";
  flextron::io::write_text_atomically(train, corpus.substr(0, 400000));
  flextron::io::write_text_atomically(held, corpus.substr(corpus.size() - 60000));
  const auto base = dir / "base", out = dir / "flex";
  auto r = run_cli("pretrain --preset tiny --tokens 40960 --data " + quote(train) + " --out " +
                   quote(base));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const std::string common = "convert --model " + quote(base) + " --data " + quote(train) +
                             " --out " + quote(out) +
                             " --token-fraction 0.4 --seq-len 64 --batch 4 --rank-samples 32 "
                             "--profile-repeats 5 --profile-check 4 --router-steps 40 "
                             "--sm-samples 12 --dynamic-steps 8";
  // Killed after stage 2 (rank, elastic).
  r = run_cli(common + " --budgets 1.0 --stop-after-stage 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto record = flextron::io::read_json_file(out / "convert.json");
  EXPECT_TRUE(record["stages"]["rank"]["done"].get<bool>());
  EXPECT_TRUE(record["stages"]["elastic"]["done"].get<bool>());
  EXPECT_FALSE(record["stages"].contains("profile"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));  // not a finished model yet
  const auto ranked_weights = out / "stages/rank/model.safetensors";
  const auto elastic_weights = out / "stages/elastic/model.safetensors";
  const auto rank_time = fs::last_write_time(ranked_weights);
  const auto elastic_time = fs::last_write_time(elastic_weights);

  // Rerun: stages 1 and 2 are skipped; the profile runs (and stops there).
  r = run_cli(common + " --budgets 1.0 --stop-after-stage 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[convert 1/5] importance ranking: cached"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[convert 2/5] elastic continued training: cached"), std::string::npos);
  EXPECT_NE(r.err.find("[convert 3/5] latency profile ->"), std::string::npos);
  EXPECT_EQ(fs::last_write_time(ranked_weights), rank_time);
  EXPECT_EQ(fs::last_write_time(elastic_weights), elastic_time);

  // A budget below the smallest architecture is refused by name, after the cached stages.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("smallest latency fraction ([0-9.]+)")))
      << r.out;
  const double smallest = std::stod(m[1]);
  r = run_cli(common + " --budgets " + std::to_string(smallest / 2).substr(0, 5) + ",1.0");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("flextron: error: --budgets: budget"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("below the smallest achievable latency fraction"), std::string::npos);

  // By default the budgets run from the smallest reachable on this machine to 1.
  r = run_cli(common);
  ASSERT_EQ(r.exit_code, 0) << tail_of(r.err, 2000);
  for (const char* line : {"[convert 1/5] importance ranking: cached",
                           "[convert 2/5] elastic continued training: cached",
                           "[convert 3/5] latency profile: cached"})
    EXPECT_NE(r.err.find(line), std::string::npos) << line;
  record = flextron::io::read_json_file(out / "convert.json");
  EXPECT_TRUE(record["done"].get<bool>());
  const auto budgets = record["budgets"].get<std::vector<double>>();
  ASSERT_GE(budgets.size(), 1u);
  EXPECT_GE(budgets.front(), smallest - 1e-9);
  EXPECT_NEAR(record["smallest_latency_fraction"].get<double>(), smallest, 1e-3);
  EXPECT_DOUBLE_EQ(budgets.back(), 1.0);
  const size_t budget_count = budgets.size();
  const std::string low_budget = std::to_string(budgets.front());
  for (const char* stage : {"rank", "elastic", "profile", "routers", "joint"})
    EXPECT_TRUE(record["stages"][stage]["done"].get<bool>()) << stage;
  // The budget split: elastic + joint = 40% of the base's 40,960 pretraining tokens (up to the
  // rounding of whole steps).
  const auto elastic_tokens = record["stages"]["elastic"]["tokens_trained"].get<int64_t>();
  const auto joint_tokens = record["stages"]["joint"]["tokens_trained"].get<int64_t>();
  EXPECT_NEAR(static_cast<double>(elastic_tokens + joint_tokens), 0.4 * 40960, 2 * 4 * 64);
  for (const char* file : {"model.safetensors", "config.json", "flextron.json", "latency.json",
                           "router.json", "router.safetensors", "tokenizer.model"})
    EXPECT_TRUE(fs::exists(out / file)) << file;

  // The converted model serves a budget like any model directory.
  r = run_cli("generate --model " + quote(out) + " --prompt 'KING' --max-tokens 8 --budget " +
              low_budget + " --router dynamic");
  EXPECT_EQ(r.exit_code, 0) << r.err;

  // eval: one row per budget and kind, plus the full model and the baseline.
  const auto task = dir / "task.jsonl";
  r = run_cli("make-task --data " + quote(held) + " --out " + quote(task) + " --examples 12");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report_dir = dir / "report";
  r = run_cli("eval --model " + quote(out) + " --ppl " + quote(held) +
              " --ppl-tokens 2000 --ctx 128 --tasks " + quote(task) + " --baseline base=" +
              quote(base) + " --repeats 3 --rounds 2 --report " + quote(report_dir));
  ASSERT_EQ(r.exit_code, 0) << tail_of(r.err, 2000);
  const auto report = flextron::io::read_json_file(report_dir / "report.json");
  std::map<std::string, size_t> per_kind;
  for (const auto& row : report["rows"]) {
    ++per_kind[row["router"].get<std::string>()];
    EXPECT_GT(row["perplexity"].get<double>(), 1.0);
    EXPECT_GT(row["decode_ms"].get<double>(), 0.0);
    // Each row timed on the runtime that serves it: the fast one, per-token routing included.
    EXPECT_EQ(row["runtime"], "fast") << row.dump();
    const double acc = row["tasks"]["task"]["acc_norm"].get<double>();
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
  }
  EXPECT_EQ(per_kind["full"], 1u);
  EXPECT_EQ(per_kind["baseline"], 1u);
  for (const char* kind : {"uniform", "static", "dynamic"})
    EXPECT_EQ(per_kind[kind], budget_count) << kind;
  EXPECT_NE(r.out.find("| base | baseline |"), std::string::npos) << r.out;
  for (const char* file : {"report.md", "quality_perplexity.svg", "quality_task.svg"})
    EXPECT_TRUE(fs::exists(report_dir / file)) << file;
  EXPECT_NE(flextron::testing::read_file(report_dir / "quality_perplexity.svg").find("<polyline"),
            std::string::npos);

  // A plain model (no latency table, no routers) is measured at full width alone.
  r = run_cli("eval --model " + quote(base) + " --tasks " + quote(task) +
              " --repeats 2 --rounds 1 --report " + quote(dir / "plain"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto plain = flextron::io::read_json_file(dir / "plain/report.json");
  ASSERT_EQ(plain["rows"].size(), 1u);
  EXPECT_EQ(plain["rows"][0]["router"], "full");
  EXPECT_EQ(plain["rows"][0]["model"], "base");

  // The paper-table baselines: the static router's shape at the low budget, taken from the
  // ranked base without training, and trained from scratch with the base's tokenizer.
  r = run_cli("extract --model " + quote(out) + " --budget " + low_budget + " --out " +
              quote(dir / "shape"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("extract --model " + quote(out / "stages/rank") + " --arch " +
              quote(dir / "shape/architecture.json") + " --out " + quote(dir / "pruned"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("pretrain --preset tiny --tokens 4096 --config " + quote(dir / "shape/config.json") +
              " --tokenizer " + quote(base / "tokenizer.model") + " --data " + quote(train) +
              " --out " + quote(dir / "scratch"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto shape = flextron::io::read_json_file(dir / "shape/config.json");
  for (const char* other : {"pruned", "scratch"}) {
    auto config = flextron::io::read_json_file(dir / other / "config.json");
    for (const char* key : {"intermediate_size", "num_key_value_heads", "hidden_size",
                            "num_hidden_layers", "vocab_size"})
      EXPECT_EQ(config.value(key, nlohmann::json()), shape.value(key, nlohmann::json()))
          << other << " " << key;
    EXPECT_EQ(config.value("layer_intermediate_sizes", nlohmann::json()),
              shape.value("layer_intermediate_sizes", nlohmann::json()))
        << other;
  }

  // Bad input names the problem.
  r = run_cli("eval --model " + quote(out) + " --budgets 0.01 --ppl " + quote(held) + " --report " +
              quote(dir / "r2"));
  expect_one_line_error(r, "latency budget 0.01", "is below the smallest achievable");
  flextron::io::write_text_atomically(dir / "bad.jsonl",
                                      "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 0}\n"
                                      "{\"context\": \"a\", \"label\": 0}\n");
  r = run_cli("eval --model " + quote(out) + " --tasks " + quote(dir / "bad.jsonl") + " --report " +
              quote(dir / "r3"));
  expect_one_line_error(r, "bad.jsonl:2", "missing field \"choices\"");
  r = run_cli("eval --model " + quote(out) + " --report " + quote(dir / "r4"));
  expect_one_line_error(r, "eval", "--ppl");
  r = run_cli(common + " --budgets 1.0 --joint-share 1.5");
  expect_one_line_error(r, "--joint-share", "outside [0, 1)");
}

// A downloaded model without its corpus: stories260K converted from its own samples alone, the
// sampled corpus recorded in convert.json and distilled from (KL) by elastic training.
TEST(CliConvert, SelfDistillConvertsFromTheWeightsAlone) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto base = flextron::testing::import_stories(dir);
  const auto out = dir / "flex";
  const std::string common = "convert --model " + quote(base) + " --out " + quote(out) +
                             " --tokens 4096 --seq-len 64 --batch 4 --rank-samples 16 "
                             "--threads 1 --stop-after-stage 3";
  expect_one_line_error(
      run_cli("convert --model " + quote(base) + " --out " + quote(out) + " --tokens 4096"),
      "--data", "--self-distill");
  auto r = run_cli(common + " --self-distill 1500 --sample-max-length 128");
  ASSERT_EQ(r.exit_code, 0) << tail_of(r.err, 2000);
  EXPECT_NE(r.err.find("[convert 1/6] self-distillation corpus ->"), std::string::npos) << r.err;
  const auto corpus = out / "stages/sample/corpus.txt";
  ASSERT_TRUE(fs::exists(corpus));
  const auto text = flextron::testing::read_file(corpus);
  EXPECT_GT(text.size(), 3000u);
  // Validation on a second sample of the base, with another seed.
  const auto heldout = flextron::testing::read_file(out / "stages/sample/heldout.txt");
  EXPECT_GT(heldout.size(), 1000u);
  EXPECT_EQ(text.find(heldout.substr(0, 200)), std::string::npos);
  auto record = flextron::io::read_json_file(out / "convert.json");
  EXPECT_EQ(record["self_distill_tokens"], 1500);
  EXPECT_TRUE(record["data"].empty());
  const auto& sample = record["stages"]["sample"];
  EXPECT_TRUE(sample["done"].get<bool>());
  EXPECT_EQ(sample["settings"]["temperature"], 1.0);
  EXPECT_EQ(sample["settings"]["max_length"], 128);
  EXPECT_TRUE(record["stages"]["elastic"]["done"].get<bool>());
  const auto training = flextron::io::read_json_file(out / "stages/elastic/training.json");
  EXPECT_TRUE(training["distill"].get<bool>()) << training.dump();
  EXPECT_EQ(training["distill_weight"], 1.0);
  EXPECT_NE(record["stages"]["elastic"]["settings"]["val"].dump().find("heldout.txt"),
            std::string::npos)
      << record.dump();

  // Rerun: every stage cached, the corpus untouched.
  const auto corpus_time = fs::last_write_time(corpus);
  r = run_cli(common + " --self-distill 1500 --sample-max-length 128");
  ASSERT_EQ(r.exit_code, 0) << tail_of(r.err, 2000);
  EXPECT_NE(r.err.find("[convert 1/6] self-distillation corpus: cached"), std::string::npos)
      << r.err;
  EXPECT_EQ(fs::last_write_time(corpus), corpus_time);
  expect_one_line_error(run_cli(common + " --self-distill 1500 --sample-top-p 2"), "--sample-top-p",
                        "(0, 1]");
}

}  // namespace
