// Pretraining on real text: it learns (beats the unigram entropy), resume is exact, and bad
// input is refused with a clear error.
#include <cmath>
#include <fstream>
#include <map>

#include <torch/torch.h>

#include "core/error.h"
#include "io/model_dir.h"
#include "test_util.h"
#include "text/sentencepiece_trainer.h"
#include "text/tokenizer.h"
#include "train/pretrain.h"
#include "train/token_dataset.h"

namespace {

namespace fs = std::filesystem;
using flextron::testing::read_file;
using flextron::testing::shared_data;

// The first `bytes` of tinyshakespeare, cut at a line end, as a file in `dir`.
fs::path shakespeare_excerpt(const fs::path& dir, size_t bytes) {
  auto text = read_file(shared_data() / "corpora/tinyshakespeare.txt");
  text = text.substr(0, text.rfind('\n', bytes) + 1);
  const auto path = dir / "shakespeare.txt";
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

flextron::train::PretrainOptions tiny_options(const fs::path& data, const fs::path& out,
                                              int64_t tokens) {
  flextron::train::PretrainOptions o;
  o.data = {data};
  o.out = out;
  o.preset = "tiny";
  o.tokens = tokens;
  o.seed = 7;
  o.threads = 2;
  o.eval_windows = 16;
  return o;
}

// Unigram entropy (nats) of the token stream: the loss of the best model that ignores context.
double unigram_entropy(const flextron::train::TokenDataset& data) {
  std::map<int32_t, int64_t> counts;
  for (int64_t i = 0; i < data.size(); ++i) ++counts[data.data()[i]];
  double h = 0.0;
  for (const auto& [token, c] : counts) {
    const double p = static_cast<double>(c) / static_cast<double>(data.size());
    h -= p * std::log(p);
  }
  return h;
}

TEST(Pretrain, TinyPresetLearnsBeyondUnigramStatistics) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto data = shared_data() / "corpora/tinyshakespeare.txt";
  auto result = flextron::train::pretrain(tiny_options(data, dir / "model", 200'000));
  ASSERT_TRUE(result.completed);
  auto tokenizer = flextron::text::load_sentencepiece_tokenizer(dir / "model/tokenizer.model");
  auto tokens = flextron::train::TokenDataset::build(
      {data}, *tokenizer, dir / "model/tokenizer.model", dir / "model/cache", false);
  const double entropy = unigram_entropy(tokens);
  EXPECT_LT(result.final_val_loss, entropy - 0.5) << "unigram entropy " << entropy;
  // The directory is a normal model directory with the budget recorded.
  auto loaded = flextron::io::load_model_dir(dir / "model");
  EXPECT_EQ(loaded.model->config().hidden_size, 128);
  auto training = nlohmann::json::parse(read_file(dir / "model/training.json"));
  EXPECT_EQ(training["tokens"].get<int64_t>(), result.tokens);
  EXPECT_GT(result.tokens, 190'000);
}

TEST(Pretrain, ResumeAfterInterruptionEqualsUninterruptedRun) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto data = shakespeare_excerpt(dir, 200'000);
  // 20 steps, checkpoints every 4; the interrupted run stops at step 10 (2 steps after the last
  // checkpoint, which are lost and redone).
  auto a = tiny_options(data, dir / "a", 20 * 128 * 16);
  a.checkpoint_every = 4;
  flextron::train::pretrain(a);
  auto b = a;
  b.out = dir / "b";
  b.tokenizer = dir / "a/tokenizer.model";
  a.tokenizer = b.tokenizer;
  b.stop_after_steps = 10;
  EXPECT_FALSE(flextron::train::pretrain(b).completed);
  EXPECT_TRUE(fs::exists(dir / "b/checkpoint/state.json"));
  b.stop_after_steps = 0;
  b.resume = true;
  EXPECT_TRUE(flextron::train::pretrain(b).completed);
  auto ta = flextron::io::load_model_tensors(dir / "a");
  auto tb = flextron::io::load_model_tensors(dir / "b");
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) EXPECT_TRUE(torch::allclose(t, tb.at(name), 0, 1e-6)) << name;
}

// ----- bad input ---------------------------------------------------------------------------------
void expect_error(const flextron::train::PretrainOptions& o, const std::string& fragment) {
  try {
    flextron::train::pretrain(o);
    ADD_FAILURE() << "no error, expected one containing: " << fragment;
  } catch (const flextron::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(PretrainBadInput, EmptyFile) {
  const auto dir = flextron::testing::scratch_dir();
  std::ofstream(dir / "empty.txt").close();
  expect_error(tiny_options(dir / "empty.txt", dir / "out", 100'000),
               (dir / "empty.txt").string() + ": empty file");
}

TEST(PretrainBadInput, Directory) {
  const auto dir = flextron::testing::scratch_dir();
  expect_error(tiny_options(dir, dir / "out", 100'000), "is a directory");
}

TEST(PretrainBadInput, InvalidUtf8NamesTheByteOffset) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  std::string text = read_file(shakespeare_excerpt(dir, 50'000));
  text[1234] = static_cast<char>(0xFF);
  std::ofstream(dir / "bad.txt", std::ios::binary) << text;
  // A tokenizer from the clean text, so the error comes from the data pipeline.
  auto o = tiny_options(dir / "bad.txt", dir / "out", 100'000);
  o.tokenizer = shared_data() / "tokenizers/llama2_tokenizer.model";
  expect_error(o, "invalid UTF-8 at byte offset 1234");
}

TEST(PretrainBadInput, BudgetSmallerThanOneBatch) {
  const auto dir = flextron::testing::scratch_dir();
  std::ofstream(dir / "t.txt") << "some text\n";
  expect_error(tiny_options(dir / "t.txt", dir / "out", 100), "smaller than one batch");
}

TEST(PretrainBadInput, ResumeFromADifferentConfig) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto dir = flextron::testing::scratch_dir();
  const auto data = shakespeare_excerpt(dir, 100'000);
  auto o = tiny_options(data, dir / "run", 8 * 128 * 16);
  o.checkpoint_every = 2;
  o.stop_after_steps = 3;
  flextron::train::pretrain(o);
  // Same directory, resumed with another tokenizer: the vocabulary (and so the config) differs.
  flextron::text::TokenizerTrainOptions t;
  t.vocab_size = 600;
  o.tokenizer = flextron::text::train_sentencepiece({data}, dir / "tok", t);
  o.resume = true;
  o.stop_after_steps = 0;
  expect_error(o, "different config");
}

}  // namespace
