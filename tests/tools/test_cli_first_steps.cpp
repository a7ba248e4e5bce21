// A new user's first steps with the CLI: defaults that follow the model's context, words for why
// generation stopped, export into a directory, the one message for a missing latency table,
// typo'd commands, what info shows, and progress that stays line by line in a log.
#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress_line.h"
#include "core/suggest.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "route/latency.h"
#include "route/route_fixtures.h"
#include "route/router_file.h"
#include "route/select.h"
#include "runtime/sequence.h"
#include "test_util.h"
#include "tools/cli_fixtures.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::expect_one_line_error;
using flextron::testing::quote;
using flextron::testing::read_file;
using flextron::testing::run_cli;
using flextron::testing::shared_data;

// stories260K with config.json saying a shorter context: a valid model (RoPE is computed), as
// a user's small model would be.
fs::path stories_with_context(const fs::path& dir, int64_t context) {
  const auto model = flextron::testing::import_stories(dir);
  auto config = flextron::io::read_json_file(model / "config.json");
  config["max_position_embeddings"] = context;
  flextron::io::write_text_atomically(model / "config.json", config.dump(2));
  return model;
}

// The first 4000 bytes of tinyshakespeare (about 1,900 stories260K tokens) as a scratch file.
fs::path short_text(const fs::path& dir) {
  const auto path = dir / "text.txt";
  flextron::io::write_text_atomically(
      path, read_file(shared_data() / "corpora/tinyshakespeare.txt").substr(0, 4000));
  return path;
}

size_t count(const std::string& s, char c) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), c));
}

// ----- 1. defaults follow the model ---------------------------------------------------------
TEST(CliFirstSteps, PerplexityDefaultCtxFollowsAShortContext) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = stories_with_context(dir, 256);
  auto r = run_cli("perplexity --model " + quote(model) + " --data " + quote(short_text(dir)) +
                   " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ctx"], 256);
  // A context longer than the default keeps the default.
  const auto full = flextron::testing::import_stories(dir / "full");
  r = run_cli("perplexity --model " + quote(full) + " --data " + quote(short_text(dir)) +
              " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ctx"], 512);
  // An explicit --ctx past the context is still an error.
  expect_one_line_error(run_cli("perplexity --model " + quote(model) + " --data " +
                                quote(short_text(dir)) + " --ctx 512"),
                        "--ctx", "exceeds the model's context of 256");
}

TEST(CliFirstSteps, BenchDefaultsFitAShortContext) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = stories_with_context(dir, 128);
  auto r = run_cli("bench --model " + quote(model) + " --repeat 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"], 64);
  EXPECT_EQ(j["gen_tokens"], 64);
}

// ----- 2. why generation stopped, in words ---------------------------------------------------
TEST(CliFirstSteps, GenerateSaysWhyItStopped) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  // Greedy from BOS runs 200 tokens without an end of text (the llama2.c reference), so a
  // 64-position context is what stops it.
  const auto model = stories_with_context(dir, 64);
  auto r = run_cli("generate --model " + quote(model) + " --temperature 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stopped: reached the model's context length (64 positions)\n"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("(context;"), std::string::npos) << r.err;
  r = run_cli("generate --model " + quote(model) + " --temperature 0 --max-tokens 10");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stopped: reached the maximum of 10 new tokens\n"), std::string::npos)
      << r.err;
  r = run_cli("generate --model " + quote(model) + " --temperature 0 --max-tokens 10 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["stop_reason"], "length");  // the machine-readable reason is unchanged
  EXPECT_EQ(j["stop_description"], "stopped: reached the maximum of 10 new tokens");
}

TEST(CliFirstSteps, EveryStopReasonHasWords) {
  using flextron::runtime::describe_stop_reason;
  EXPECT_EQ(describe_stop_reason("length", 7, 256), "stopped: reached the maximum of 7 new tokens");
  EXPECT_EQ(describe_stop_reason("eos", 7, 256),
            "stopped: the model ended the text (end-of-sequence token)");
  EXPECT_EQ(describe_stop_reason("context", 7, 256),
            "stopped: reached the model's context length (256 positions)");
  EXPECT_EQ(describe_stop_reason("stop", 7, 256), "stopped: generated a stop string");
  EXPECT_EQ(describe_stop_reason("cancelled", 7, 256), "stopped: cancelled");
}

// ----- 3. export into a directory; the atomic writer's errors --------------------------------
TEST(CliFirstSteps, AtomicWriteOverADirectoryNamesIt) {
  const auto dir = flextron::testing::scratch_dir();
  for (const auto& target : {dir, fs::path(dir.string() + "/")}) {
    try {
      flextron::io::write_text_atomically(target, "x");
      ADD_FAILURE() << "no error for " << target;
    } catch (const flextron::Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(dir.string()), std::string::npos) << what;
      EXPECT_NE(what.find("is a directory"), std::string::npos) << what;
      EXPECT_EQ(what.find("Success"), std::string::npos) << what;
    }
  }
  EXPECT_TRUE(fs::is_empty(dir));  // no temporary file left behind
}

TEST(CliFirstSteps, ExportIntoADirectoryWritesModelFileThere) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  fs::create_directories(dir / "existing");
  // An existing directory, and a new one named with a trailing '/'.
  auto r =
      run_cli("export --model " + quote(model) + " --to gguf --out " + quote(dir / "existing"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find((dir / "existing/model.gguf").string()), std::string::npos) << r.out;
  r = run_cli("export --model " + quote(model) + " --to gguf --out '" + (dir / "new").string() +
              "/'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // The file written is a real GGUF of the model: importing it back generates the same tokens.
  r = run_cli("import --from gguf --model " + quote(dir / "new/model.gguf") + " --out " +
              quote(dir / "back"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string gen = " --max-tokens 20 --temperature 0 --json";
  EXPECT_EQ(
      nlohmann::json::parse(run_cli("generate --model " + quote(dir / "back") + gen).out)["tokens"],
      nlohmann::json::parse(run_cli("generate --model " + quote(model) + gen).out)["tokens"]);
  // llama2c: model.bin with tokenizer.bin beside it.
  r = run_cli("export --model " + quote(model) + " --to llama2c --out " + quote(dir / "existing"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_file(dir / "existing/model.bin").size(),
            read_file(shared_data() / "stories260K/stories260K.bin").size());
  EXPECT_TRUE(fs::exists(dir / "existing/tokenizer.bin"));
  r = run_cli("export --help");
  EXPECT_NE(r.out.find("model.gguf"), std::string::npos) << r.out;
}

// ----- 4. one message for a model without a latency table ------------------------------------
TEST(CliFirstSteps, BudgetWithoutLatencyTableSaysHowToMakeOne) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  const auto text = short_text(dir);
  const auto latency = (model / "latency.json").string();
  const std::string why =
      "no latency table, so it runs the full model only (budget 1.0); "
      "flextron convert or flextron profile makes one";
  const std::string m = " --model " + quote(model);
  for (const std::string& command :
       {"generate" + m + " --max-tokens 2 --budget 0.5",
        "perplexity" + m + " --data " + quote(text) + " --ctx 64 --budget 0.5",
        "extract" + m + " --budget 0.5 --out " + quote(dir / "x"),
        "export" + m + " --to hf --budget 0.5 --out " + quote(dir / "y"),
        "eval" + m + " --budgets 0.5 --ppl " + quote(text) + " --report " +
            quote(dir / "report")}) {
    SCOPED_TRACE(command);
    expect_one_line_error(run_cli(command), latency, why);
  }
  // The server answers with the same sentence (route/select.h).
  EXPECT_EQ(flextron::route::missing_latency_table_message(), "this model has " + why);
  // The full model needs no table, as the server has it.
  auto r = run_cli("generate" + m + " --max-tokens 2 --budget 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// ----- 5. a mistyped command -----------------------------------------------------------------
TEST(CliFirstSteps, UnknownCommandNamesTheNearest) {
  auto r = run_cli("generat --model x");
  expect_one_line_error(r, "unknown command 'generat'", "did you mean 'generate'?");
  r = run_cli("proflie");
  expect_one_line_error(r, "unknown command 'proflie'", "did you mean 'profile'?");
  r = run_cli("xyzzyqwv");
  expect_one_line_error(r, "unknown command 'xyzzyqwv'", "known: ");
  EXPECT_EQ(r.err.find("did you mean"), std::string::npos) << r.err;
  // A known command still runs; no command at all is still CLI11's own message.
  EXPECT_EQ(run_cli("--version").exit_code, 0);
  r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0);
  const auto line = r.out.find("  export");
  ASSERT_NE(line, std::string::npos) << r.out;
  EXPECT_NE(r.out.substr(line, r.out.find('\n', line) - line).find("GGUF"), std::string::npos)
      << r.out;
}

TEST(CliFirstSteps, NearestNameByEditDistance) {
  EXPECT_EQ(flextron::edit_distance("generat", "generate"), 1u);
  EXPECT_EQ(flextron::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(flextron::edit_distance("", "abc"), 3u);
  const std::vector<std::string> known{"generate", "info", "import", "export", "perplexity"};
  EXPECT_EQ(flextron::nearest_name("imprt", known), "import");
  EXPECT_EQ(flextron::nearest_name("inf", known), "info");
  EXPECT_EQ(flextron::nearest_name("exprot", known), "export");
  EXPECT_EQ(flextron::nearest_name("zzzzzz", known), "");
}

// ----- 6. info ---------------------------------------------------------------------------------
TEST(CliFirstSteps, InfoShowsWhatTheDirectoryHolds) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  {
    SCOPED_TRACE("a plain import: weights, tokenizer, nothing routed");
    auto r = run_cli("info --model " + quote(model) + " --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["weights"]["format"], "safetensors");
    EXPECT_EQ(j["weights"]["layout"], "single");
    // stories260K: 5 layers of 9 tensors, the embedding and the final norm, all float32.
    EXPECT_EQ(j["weights"]["dtypes"], (nlohmann::json{{"F32", 5 * 9 + 2}}));
    EXPECT_EQ(j["weights"]["tensors"], 47);
    EXPECT_EQ(j["parameters"], j["weights"]["bytes"].get<int64_t>() / 4);
    EXPECT_EQ(j["tokenizer"]["file"], "tokenizer.bin");
    const auto kind = flextron::io::load_model_dir(model).tokenizer->kind();
    EXPECT_FALSE(kind.empty());
    EXPECT_EQ(j["tokenizer"]["kind"], kind);
    EXPECT_EQ(j["context"], 512);
    EXPECT_TRUE(j["elastic_space"]["file"].is_null());
    EXPECT_TRUE(j["latency_table"].is_null());
    EXPECT_TRUE(j["routers"].is_null());
    EXPECT_TRUE(j["budget_range"].is_null());
    r = run_cli("info --model " + quote(model));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("tokenizer: tokenizer.bin (" + kind + ", 512 tokens)"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("latency table: none (flextron convert or flextron profile makes one)"),
              std::string::npos)
        << r.out;
  }
  {
    SCOPED_TRACE("with a latency table (known in closed form) and routers");
    auto loaded = flextron::io::load_model_dir(model);
    const auto& config = loaded.model->config();
    flextron::model::save_elastic_space(model, loaded.space);
    flextron::route::save_latency_table(model / "latency.json",
                                        flextron::testing::synthetic_table(config, loaded.space));
    flextron::route::save_routers(
        model, flextron::route::make_routers(config, loaded.space, {0.5, 1.0}, false));
    // The synthetic table: 0.2 ms fixed, per layer 0.1 ms * mlp width / widest and 0.05 ms *
    // kv groups / most; the narrowest architecture takes every layer's first choice.
    double narrow = 0.2, full = 0.2;
    for (size_t l = 0; l < loaded.space.mlp.size(); ++l) {
      const auto& mlp = loaded.space.mlp[l];
      const auto& kv = loaded.space.kv_groups[l];
      narrow += 0.1 * static_cast<double>(mlp.front()) / static_cast<double>(mlp.back()) +
                0.05 * static_cast<double>(kv.front()) / static_cast<double>(kv.back());
      full += 0.15;
    }
    auto r = run_cli("info --model " + quote(model) + " --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["elastic_space"]["file"], "flextron.json");
    EXPECT_EQ(j["latency_table"]["file"], "latency.json");
    EXPECT_EQ(j["latency_table"]["hardware"]["cpu"], "synthetic");
    EXPECT_NEAR(j["latency_table"]["full_decode_ms"].get<double>(), full, 1e-9);
    EXPECT_EQ(j["routers"]["budgets"], (nlohmann::json{0.5, 1.0}));
    EXPECT_EQ(j["routers"]["dynamic"], false);
    EXPECT_NEAR(j["budget_range"]["min"].get<double>(), narrow / full, 1e-9);
    EXPECT_EQ(j["budget_range"]["max"], 1.0);
    r = run_cli("info --model " + quote(model));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("routers: router.json + router.safetensors: static, trained for budgets "
                         "0.5, 1.0"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find(" .. 1.000 of full latency"), std::string::npos) << r.out;
  }
  {
    SCOPED_TRACE("a broken latency table is reported, not fatal");
    flextron::io::write_text_atomically(model / "latency.json", "{");
    auto r = run_cli("info --model " + quote(model) + " --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_NE(j["latency_table"]["error"].get<std::string>().find("invalid JSON"),
              std::string::npos);
    EXPECT_TRUE(j["budget_range"].is_null());
  }
}

// ----- 7. progress in a log ----------------------------------------------------------------------
TEST(CliFirstSteps, RankProgressIsWholeLinesInALog) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto model = flextron::testing::import_stories(dir);
  // run_cli sends stderr to a file: not a terminal.
  auto r = run_cli("rank --model " + quote(model) + " --data " + quote(short_text(dir)) +
                   " --out " + quote(dir / "ranked") + " --samples 8 --seq-len 64 --batch 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count(r.err, '\r'), 0u) << r.err;
  // The first state and the last, each a line of its own.
  EXPECT_NE(r.err.find("rank: 2/8 sequences"), std::string::npos) << r.err;
  const auto last = r.err.find("rank: 8/8 sequences");
  ASSERT_NE(last, std::string::npos) << r.err;
  EXPECT_NE(r.err.find('\n', last), std::string::npos) << r.err;
  EXPECT_GE(count(r.err, '\n'), 2u) << r.err;
}

// A ProgressLine into a temporary file, read back.
std::string progress_output(bool terminal, double interval, int updates, bool finish) {
  std::FILE* f = std::tmpfile();
  {
    flextron::ProgressLine line(f, terminal, interval);
    for (int i = 1; i <= updates; ++i) line.updatef("step %d/%d", i, updates);
    if (finish) line.finish();
  }
  std::rewind(f);
  std::string out;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

TEST(CliFirstSteps, ProgressLineModes) {
  // Off a terminal, an interval no run reaches: the first state and the held last one.
  EXPECT_EQ(progress_output(false, 1e9, 5, true), "step 1/5\nstep 5/5\n");
  // The destructor finishes too.
  EXPECT_EQ(progress_output(false, 1e9, 5, false), "step 1/5\nstep 5/5\n");
  // No interval: every state, each its own line.
  EXPECT_EQ(progress_output(false, 0.0, 3, true), "step 1/3\nstep 2/3\nstep 3/3\n");
  // On a terminal: redrawn with '\r', the last state drawn, then one '\n'.
  const auto tty = progress_output(true, 1e9, 3, true);
  EXPECT_EQ(tty.front(), '\r');
  EXPECT_EQ(tty.substr(tty.size() - 10), "\rstep 3/3\n");
  EXPECT_EQ(count(tty, '\n'), 1u);
  EXPECT_EQ(progress_output(false, 1e9, 0, true), "");  // nothing shown, nothing printed
}

}  // namespace
