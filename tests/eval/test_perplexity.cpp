// Perplexity against a direct computation: exp(mean NLL) from the model's logits, written out
// independently of the windowing code.
#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "eval/perplexity.h"
#include "io/llama2c_checkpoint.h"
#include "model/transformer.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

using flextron::testing::shared_data;

struct Stories {
  flextron::model::Transformer model{nullptr};
  std::unique_ptr<flextron::text::Tokenizer> tokenizer;
};

Stories load() {
  auto ck = flextron::io::read_llama2c_checkpoint(shared_data() / "stories260K/stories260K.bin");
  Stories s;
  s.model = flextron::model::Transformer(ck.config);
  s.model->load_state(ck.tensors, "stories260K.bin");
  s.model->eval();
  s.tokenizer =
      flextron::text::load_llama2c_tokenizer(shared_data() / "stories260K/tok512.bin", 512);
  return s;
}

// -sum log p(tokens[p+1] | tokens[begin..p]) for p in [from, to), in double precision.
double direct_nll(flextron::model::TransformerImpl& m, const std::vector<int64_t>& window,
                  int64_t from, int64_t to) {
  torch::NoGradGuard no_grad;
  auto logits = m.forward(torch::tensor(window).unsqueeze(0))[0].to(torch::kDouble);
  double nll = 0.0;
  for (int64_t p = from; p < to; ++p) {
    const auto row = logits[p];
    const double max = row.max().item<double>();
    const double log_z = max + std::log((row - max).exp().sum().item<double>());
    nll += log_z - row[window[p + 1]].item<double>();
  }
  return nll;
}

const char* kStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big red ball under a tree. She ran to get it, but a dog got there first. "
    "The dog wagged its tail and gave Lily the ball. Lily was happy and they played all day. ";

TEST(Perplexity, RollingSingleWindowEqualsDirectComputation) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto s = load();
  auto tokens = s.tokenizer->encode(kStory, true);
  flextron::eval::PerplexityOptions o;
  o.ctx = 512;
  o.stride = 512;
  auto r = flextron::eval::perplexity(*s.model, *s.tokenizer, tokens, o);
  const auto n = static_cast<int64_t>(tokens.size());
  EXPECT_EQ(r.tokens_scored, n - 1);
  const double expected =
      std::exp(direct_nll(*s.model, tokens, 0, n - 1) / static_cast<double>(n - 1));
  EXPECT_NEAR(r.perplexity(), expected, 1e-4 * expected);
  EXPECT_LT(r.perplexity(), 20.0);  // a story model finds a story predictable
  // Bytes scored = the text's bytes (the first piece after BOS loses its leading space).
  EXPECT_EQ(r.bytes_scored, static_cast<int64_t>(std::string(kStory).size()));
}

TEST(Perplexity, LlamaCppConventionScoresSecondHalfOfEachWindow) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto s = load();
  std::string text;
  for (int i = 0; i < 4; ++i) text += kStory;
  auto tokens = s.tokenizer->encode(text, true);
  const int64_t ctx = 64;
  flextron::eval::PerplexityOptions o;
  o.ctx = ctx;
  auto r = flextron::eval::perplexity(*s.model, *s.tokenizer, tokens, o);
  const int64_t windows = static_cast<int64_t>(tokens.size()) / ctx;
  EXPECT_EQ(r.windows, windows);
  double nll = 0.0;
  for (int64_t w = 0; w < windows; ++w) {
    std::vector<int64_t> window(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx);
    window[0] = 1;  // BOS
    nll += direct_nll(*s.model, window, ctx / 2, ctx - 1);
  }
  EXPECT_EQ(r.tokens_scored, windows * (ctx - 1 - ctx / 2));
  EXPECT_NEAR(r.mean_nll(), nll / static_cast<double>(r.tokens_scored), 1e-5);
}

TEST(Perplexity, RollingWithShortStrideScoresEveryTokenOnce) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto s = load();
  auto tokens = s.tokenizer->encode(std::string(kStory) + kStory, true);
  flextron::eval::PerplexityOptions o;
  o.ctx = 48;
  o.stride = 16;
  auto r = flextron::eval::perplexity(*s.model, *s.tokenizer, tokens, o);
  EXPECT_EQ(r.tokens_scored, static_cast<int64_t>(tokens.size()) - 1);
  // When the window covers the whole text, every token sees its whole prefix whatever the
  // stride: the score must equal the single-window one.
  o.ctx = 512;
  auto strided = flextron::eval::perplexity(*s.model, *s.tokenizer, tokens, o);
  o.stride = 512;
  auto single = flextron::eval::perplexity(*s.model, *s.tokenizer, tokens, o);
  EXPECT_GT(strided.windows, 1);
  EXPECT_NEAR(strided.mean_nll(), single.mean_nll(), 1e-5);
  EXPECT_EQ(strided.bytes_scored, single.bytes_scored);
}

TEST(Perplexity, ContextLongerThanModelIsRejected) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto s = load();
  flextron::eval::PerplexityOptions o;
  o.ctx = 4096;
  EXPECT_THROW(flextron::eval::perplexity(*s.model, *s.tokenizer, {1, 2, 3}, o), flextron::Error);
}

}  // namespace
