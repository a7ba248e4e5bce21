// Budgets end to end through the CLI: profile, train-router, and --budget on generate,
// perplexity and extract, with the bad inputs a user will try. The routing runs on a latency
// table known in closed form (route_fixtures.h) so the chosen architectures do not depend on
// this machine's timing; `profile` itself is run once to check what it writes.
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "route/latency.h"
#include "route/route_fixtures.h"
#include "test_util.h"
#include "tools/cli_fixtures.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::quote;
using flextron::testing::run_cli;

// ctest runs every test in its own process, so the routed model (the slow part) is built once
// inside one test, and the checks below are its sections.
struct RoutedStories {
  fs::path dir_;
  fs::path text_;
  std::string train_out_;

  void build() {
    dir_ = flextron::testing::scratch_dir();
    auto built = flextron::testing::build_routed_stories(dir_, &train_out_);
    text_ = built.text;
    ASSERT_TRUE(fs::exists(built.routed / "router.json"));
  }
  static nlohmann::json generate(const fs::path& model, const std::string& extra) {
    auto r = run_cli("generate --model " + quote(model) +
                     " --prompt 'Once upon a time' --max-tokens 30 --json " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
  }
  void train_router_writes_routers_and_the_budget_table();
  void budget_picks_one_architecture_for_generate_and_extract();
  void dynamic_and_uniform_routing();
  void bad_budgets_are_one_line_errors();
  void quality_targets_pick_the_fastest_predicted_within();
  void profile_writes_a_checked_table();
};

TEST(CliRoute, BudgetsEndToEnd) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  RoutedStories t;
  ASSERT_NO_FATAL_FAILURE(t.build());
  {
    SCOPED_TRACE("train-router output");
    t.train_router_writes_routers_and_the_budget_table();
  }
  {
    SCOPED_TRACE("static budgets");
    t.budget_picks_one_architecture_for_generate_and_extract();
  }
  {
    SCOPED_TRACE("dynamic and uniform");
    t.dynamic_and_uniform_routing();
  }
  {
    SCOPED_TRACE("quality targets");
    t.quality_targets_pick_the_fastest_predicted_within();
  }
  {
    SCOPED_TRACE("bad input");
    t.bad_budgets_are_one_line_errors();
  }
  {
    SCOPED_TRACE("profile");
    t.profile_writes_a_checked_table();
  }
}

void RoutedStories::train_router_writes_routers_and_the_budget_table() {
  const auto routed = dir_ / "routed";
  for (const char* f : {"config.json", "model.safetensors", "flextron.json", "latency.json",
                        "router.json", "router.safetensors"})
    EXPECT_TRUE(fs::exists(routed / f)) << f;
  auto j = flextron::io::read_json_file(routed / "router.json");
  EXPECT_TRUE(j["dynamic"].get<bool>());
  EXPECT_GE(j["report"]["architectures_measured"].get<int>(), 18);
  for (const auto& e : j["budget_table"])
    EXPECT_LE(e["latency_fraction"].get<double>(), e["budget"].get<double>() + 1e-9);
  // The table printed: one row per trained budget.
  for (const char* b : {"0.50 ", "0.70 ", "1.00 "})
    EXPECT_NE(train_out_.find(std::string("\n") + b), std::string::npos) << train_out_;
}

void RoutedStories::budget_picks_one_architecture_for_generate_and_extract() {
  const auto routed = dir_ / "routed";
  auto at_budget = generate(routed, "--budget 0.6");
  const auto& selection = at_budget["selection"];
  EXPECT_EQ(selection["router"], "static");
  EXPECT_LE(selection["predicted_latency_fraction"].get<double>(), 0.6 + 1e-9);
  EXPECT_GT(at_budget["timings"]["decode_tokens_per_second"].get<double>(), 0.0);
  // The same architecture given explicitly generates the same tokens.
  flextron::io::write_text_atomically(dir_ / "arch06.json", selection["architecture"].dump());
  EXPECT_EQ(generate(routed, "--arch " + quote(dir_ / "arch06.json"))["tokens"],
            at_budget["tokens"]);
  // And so does the sub-network extracted at that budget.
  auto r = run_cli("extract --model " + quote(routed) + " --budget 0.6 --out " +
                   quote(dir_ / "extracted06"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(generate(dir_ / "extracted06", "")["tokens"], at_budget["tokens"]);
  // A parameter budget is looked up in the same table.
  auto by_params = generate(routed, "--budget 0.5 --budget-kind params");
  EXPECT_EQ(by_params["selection"]["budget_kind"], "params");
}

void RoutedStories::dynamic_and_uniform_routing() {
  const auto routed = dir_ / "routed";
  auto dynamic = generate(routed, "--budget 0.7 --router dynamic");
  EXPECT_EQ(dynamic["selection"]["router"], "dynamic");
  EXPECT_EQ(dynamic["selection"]["dynamic_mean_mlp_widths"].size(), 5u);
  EXPECT_FALSE(dynamic["tokens"].empty());
  // Deterministic: the same request routes and generates the same.
  EXPECT_EQ(generate(routed, "--budget 0.7 --router dynamic")["tokens"], dynamic["tokens"]);
  auto r = run_cli("perplexity --model " + quote(routed) + " --data " + quote(text_) +
                   " --ctx 64 --budget 0.7 --router uniform --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["selection"]["router"], "uniform");
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  r = run_cli("perplexity --model " + quote(routed) + " --data " + quote(text_) +
              " --ctx 64 --budget 0.7 --router dynamic --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void RoutedStories::bad_budgets_are_one_line_errors() {
  const std::string gen = "generate --model " + quote(dir_ / "routed") + " --prompt hi ";
  expect_one_line_error(run_cli(gen + "--budget 0"), "--budget", "must be > 0");
  expect_one_line_error(run_cli(gen + "--budget 1.5"), "--budget", "<= 1");
  expect_one_line_error(run_cli(gen + "--budget nan"), "--budget", "finite");
  expect_one_line_error(run_cli(gen + "--budget fast"), "--budget", "not a number");
  expect_one_line_error(run_cli(gen + "--budget 0.3"), "budget", "smallest achievable 0.3987");
  expect_one_line_error(run_cli(gen + "--budget 0.5 --budget-kind speed"), "--budget-kind",
                        "latency, ms, params, memory or quality");
  expect_one_line_error(run_cli(gen + "--budget 0.5 --router psychic"), "--router", "static");
  expect_one_line_error(run_cli(gen + "--budget 0.5 --budget-kind memory --router dynamic"),
                        "--budget-kind", "dynamic routing");
  expect_one_line_error(run_cli("extract --model " + quote(dir_ / "routed") +
                                " --budget 0.5 --router dynamic --out " + quote(dir_ / "x")),
                        "--router", "one architecture");
  // No routers yet: the ranked model has only its latency table.
  expect_one_line_error(run_cli("generate --model " + quote(dir_ / "ranked") + " --budget 0.5"),
                        "router.json", "train-router");
  // A latency table from another model.
  const auto copy = dir_ / "mismatched";
  fs::remove_all(copy);
  fs::copy(dir_ / "routed", copy);
  flextron::model::ModelConfig other;
  other.num_hidden_layers = 3;
  flextron::route::save_latency_table(
      copy / "latency.json",
      flextron::testing::synthetic_table(other, flextron::model::default_elastic_space(other)));
  expect_one_line_error(run_cli("generate --model " + quote(copy) + " --budget 0.5"),
                        "latency.json", "another model");
  // train-router with a budget below the narrowest architecture.
  expect_one_line_error(
      run_cli("train-router --model " + quote(dir_ / "ranked") + " --data " + quote(text_) +
              " --out " + quote(dir_ / "r2") + " --budgets 0.2,1.0"),
      "--budgets", "smallest achievable");
}

void RoutedStories::quality_targets_pick_the_fastest_predicted_within() {
  const auto routed = dir_ / "routed";
  // The full model's own loss: the full model.
  auto none = generate(routed, "--budget ppl+0%");
  const auto& s0 = none["selection"];
  EXPECT_EQ(s0["budget_kind"], "quality");
  EXPECT_DOUBLE_EQ(s0["predicted_latency_fraction"].get<double>(), 1.0);
  EXPECT_NEAR(s0["predicted_loss"].get<double>(), s0["target_loss"].get<double>(), 1e-6);
  // Looser targets: no slower, and each within its target by the prediction.
  double previous = 1.0;
  for (const char* target : {"ppl+2%", "ppl+10%", "loss+0.5", "loss+100"}) {
    auto j = generate(routed, std::string("--budget ") + target);
    const auto& s = j["selection"];
    EXPECT_LE(s["predicted_latency_fraction"].get<double>(), previous + 1e-9) << target;
    EXPECT_LE(s["predicted_loss"].get<double>(), s["target_loss"].get<double>() + 1e-9) << target;
    previous = s["predicted_latency_fraction"].get<double>();
  }
  // Anything goes: the fastest entry of the table.
  double fastest = 1.0;
  const auto router = flextron::io::read_json_file(routed / "router.json");
  for (const auto& e : router["budget_table"])
    fastest = std::min(fastest, e["latency_fraction"].get<double>());
  EXPECT_DOUBLE_EQ(previous, fastest);
  // --budget-kind quality says the same; perplexity takes the target too.
  EXPECT_EQ(generate(routed, "--budget ppl+10% --budget-kind quality")["tokens"],
            generate(routed, "--budget ppl+10%")["tokens"]);
  auto r = run_cli("perplexity --model " + quote(routed) + " --data " + quote(text_) +
                   " --ctx 64 --budget loss+0.5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["selection"]["budget_kind"], "quality");

  const std::string gen = "generate --model " + quote(routed) + " --prompt hi ";
  expect_one_line_error(run_cli(gen + "--budget 'ppl<=1.01'"), "budget",
                        "the best achievable is the full model");
  expect_one_line_error(run_cli(gen + "--budget ppl+x"), "--budget", "is not a number");
  expect_one_line_error(run_cli(gen + "--budget loss"), "--budget", "not one of its forms");
  expect_one_line_error(run_cli(gen + "--budget 'ppl<=0.5'"), "--budget", "at least 1");
  expect_one_line_error(run_cli(gen + "--budget 0.5 --budget-kind quality"), "--budget",
                        "not one of its forms");
  expect_one_line_error(run_cli(gen + "--budget ppl+2% --router uniform"), "--router", "static");
}

void RoutedStories::profile_writes_a_checked_table() {
  auto r = run_cli("profile --model " + quote(dir_ / "ranked") + " --out " +
                   quote(dir_ / "measured.json") +
                   " --contexts 32,128 --repeats 3 --warmup 1 --check 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("check: 3 random architectures"), std::string::npos) << r.out;
  auto j = flextron::io::read_json_file(dir_ / "measured.json");
  EXPECT_EQ(j["format"], "flextron-latency-table");
  EXPECT_EQ(j["contexts"], nlohmann::json({32, 128}));
  EXPECT_EQ(j["layers"].size(), 5u);
  EXPECT_EQ(j["check"]["architectures"].size(), 3u);
  // Calibrated and checked on the runtime generate serves a Llama model with.
  EXPECT_EQ(j["hardware"]["runtime"], "fast");
  for (const auto& row : j["check"]["architectures"]) {
    EXPECT_GT(row["measured_ms"].get<double>(), 0.0);
    EXPECT_GT(row["uncalibrated_ms"].get<double>(), 0.0);
  }
  EXPECT_TRUE(j["check"].contains("uncalibrated_median_relative_error"));
  r = run_cli("profile --model " + quote(dir_ / "ranked") + " --out " +
              quote(dir_ / "measured_torch.json") +
              " --contexts 32 --repeats 2 --warmup 0 --rounds 1 --check 0 --runtime torch");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("torch runtime"), std::string::npos) << r.out;
  EXPECT_EQ(flextron::io::read_json_file(dir_ / "measured_torch.json")["hardware"]["runtime"],
            "torch");
  expect_one_line_error(run_cli("profile --model " + quote(dir_ / "ranked") + " --out " +
                                quote(dir_ / "m2.json") + " --contexts 32,abc"),
                        "--contexts", "is not an integer");
}

}  // namespace
