// The fast runtime from the CLI: generate picks it (and --runtime chooses), bench measures every
// budget and runtime and times a reference command beside them. No timing is asserted.
#include <fstream>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tools/cli_fixtures.h"

namespace {

using flextron::testing::import_stories;
using flextron::testing::run_cli;

// --json-schema constrains generate's output on both runtimes: it parses and has the schema's
// shape; too few --max-tokens and a schema keyword it cannot enforce are errors naming them.
TEST(RuntimeCli, GenerateWithAJsonSchema) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = import_stories(dir);
  const auto schema = dir / "schema.json";
  std::ofstream(schema) << R"({"type": "object", "properties": {"hero": {"type": "string"},
      "friends": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}},
      "required": ["hero", "friends"]})";
  for (const std::string runtime : {"fast", "torch"}) {
    auto r = run_cli("generate --model '" + model.string() + "' --prompt 'Once' --json-schema '" +
                     schema.string() + "' --max-tokens 60 --seed 2 --json --runtime " + runtime);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto out = nlohmann::json::parse(r.out);
    EXPECT_EQ(out["stop_reason"], "eos");
    nlohmann::json value;
    ASSERT_NO_THROW(value = nlohmann::json::parse(out["text"].get<std::string>())) << out["text"];
    EXPECT_TRUE(value["hero"].is_string()) << value;
    ASSERT_TRUE(value["friends"].is_array()) << value;
    EXPECT_LE(value["friends"].size(), 2u);
  }
  auto few = run_cli("generate --model '" + model.string() + "' --json-schema '" + schema.string() +
                     "' --max-tokens 5");
  EXPECT_EQ(few.exit_code, 1);
  EXPECT_NE(few.err.find("--max-tokens: 5 is too few"), std::string::npos) << few.err;
  std::ofstream(schema) << R"({"type": "string", "pattern": "a+"})";
  auto bad = run_cli("generate --model '" + model.string() + "' --json-schema '" + schema.string() +
                     "' --max-tokens 20");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("schema.json.pattern: is not supported"), std::string::npos) << bad.err;
}

// Greedy and sampled generation give the same tokens on both runtimes.
TEST(RuntimeCli, GenerateRuntimesAgree) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  for (const std::string sampling : {"--temperature 0", "--temperature 0.8 --seed 3"}) {
    const std::string base = "generate --model '" + model.string() +
                             "' --prompt 'Once upon a time' --max-tokens 40 --json " + sampling;
    auto fast = run_cli(base + " --runtime fast");
    auto torch = run_cli(base + " --runtime torch");
    auto chosen = run_cli(base + " --arch mlp=0.5,attn=0.5");
    ASSERT_EQ(fast.exit_code, 0) << fast.err;
    ASSERT_EQ(torch.exit_code, 0) << torch.err;
    ASSERT_EQ(chosen.exit_code, 0) << chosen.err;
    auto f = nlohmann::json::parse(fast.out), t = nlohmann::json::parse(torch.out);
    EXPECT_EQ(f["runtime"], "fast");
    EXPECT_EQ(t["runtime"], "torch");
    EXPECT_EQ(nlohmann::json::parse(chosen.out)["runtime"], "fast");  // auto on a Llama model
    EXPECT_EQ(f["tokens"], t["tokens"]) << sampling;
    EXPECT_EQ(f["stop_reason"], t["stop_reason"]);
  }
  auto bf16 = run_cli("generate --model '" + model.string() +
                      "' --max-tokens 2 --dtype bf16 --runtime fast");
  EXPECT_EQ(bf16.exit_code, 1);
  EXPECT_NE(bf16.err.find("fp32"), std::string::npos) << bf16.err;
}

TEST(RuntimeCli, BenchReportsEveryBudgetRuntimeAndTheReference) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto model = import_stories(flextron::testing::scratch_dir());
  auto r = run_cli("bench --model '" + model.string() +
                   "' --budgets 1,0.5 --prompt-tokens 8 --gen-tokens 8 --repeat 2 --runtime both"
                   " --quant f32,q4_0 --json --reference-cmd 'echo achieved tok/s: 123.5'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 6u);  // {fast, fast-q4_0, torch} x {1, 0.5}
  EXPECT_EQ(j["results"][1]["runtime"], "fast-q4_0");
  EXPECT_EQ(j["results"][1]["weights"], "q4_0");
  // q4_0 holds 18 bytes per 32 weights against fp32's 128.
  EXPECT_LT(j["results"][1]["weights_bytes"].get<int64_t>(),
            j["results"][0]["weights_bytes"].get<int64_t>() / 4);
  for (const auto& row : j["results"]) {
    EXPECT_EQ(row["decode_runs"].size(), 2u);
    EXPECT_GT(row["decode_tokens_per_second"].get<double>(), 0.0);
    EXPECT_GT(row["prefill_tokens_per_second"].get<double>(), 0.0);
  }
  EXPECT_EQ(j["results"][3]["budget"], 0.5);
  EXPECT_EQ(j["results"][3]["architecture"]["layers"][0]["mlp"], 88);  // 0.5 * 172, rounded to 8
  EXPECT_DOUBLE_EQ(j["reference"]["tokens_per_second"].get<double>(), 123.5);
  EXPECT_EQ(j["reference"]["wall_seconds"].size(), 2u);
  // Generating 8 tokens: the reference is set against decode; with one, against prefill.
  EXPECT_EQ(j["reference"]["phase"], "decode");
  EXPECT_DOUBLE_EQ(j["reference"]["full_width_decode_ratio_fast"].get<double>(),
                   j["results"][0]["decode_tokens_per_second"].get<double>() / 123.5);
  auto prompt_only = run_cli("bench --model '" + model.string() +
                             "' --budgets 1 --prompt-tokens 8 --gen-tokens 1 --repeat 1 --json"
                             " --reference-cmd 'echo achieved tok/s: 50'");
  ASSERT_EQ(prompt_only.exit_code, 0) << prompt_only.err;
  auto p = nlohmann::json::parse(prompt_only.out);
  EXPECT_EQ(p["reference"]["phase"], "prefill");
  EXPECT_DOUBLE_EQ(p["reference"]["full_width_prefill_ratio_fast"].get<double>(),
                   p["results"][0]["prefill_tokens_per_second"].get<double>() / 50.0);
  EXPECT_GT(j["memory"]["peak_rss_bytes_while_generating"].get<int64_t>(),
            j["memory"]["weights_bytes"].get<int64_t>());

  auto bad = run_cli("bench --model '" + model.string() + "' --budgets 1.5");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--budgets"), std::string::npos);
  auto failing = run_cli("bench --model '" + model.string() +
                         "' --gen-tokens 2 --repeat 1 --reference-cmd 'exit 3'");
  EXPECT_EQ(failing.exit_code, 1);
  EXPECT_NE(failing.err.find("--reference-cmd"), std::string::npos);
  EXPECT_NE(failing.err.find("exited with status 3"), std::string::npos) << failing.err;
}

}  // namespace
