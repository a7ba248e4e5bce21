// Generation ends at any id the tokenizer lists in eos_ids() (generation_config.json's
// eos_token_id list: Llama 3 ends a turn with <|eot_id|> as well as <|end_of_text|>).
#include <algorithm>

#include <torch/torch.h>

#include "core/error.h"
#include "model/config.h"
#include "model/transformer.h"
#include "runtime/generate.h"
#include "runtime/sequence.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

// A vocabulary of single letters whose end-of-sequence ids are given.
class LetterTokenizer : public flextron::text::Tokenizer {
 public:
  LetterTokenizer(int64_t vocab, std::vector<int64_t> eos) : vocab_(vocab), eos_(std::move(eos)) {}
  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int64_t> ids;
    if (add_bos) ids.push_back(bos_id());
    for (char c : text) ids.push_back(3 + (static_cast<unsigned char>(c) % (vocab_ - 3)));
    return ids;
  }
  std::string decode_piece(int64_t, int64_t token) const override { return piece(token); }
  int64_t vocab_size() const override { return vocab_; }
  int64_t bos_id() const override { return 1; }
  int64_t eos_id() const override { return 2; }
  std::vector<int64_t> eos_ids() const override { return eos_; }
  std::string piece(int64_t id) const override { return std::string(1, char('a' + id % 26)); }
  float score(int64_t) const override { return 0.0f; }
  std::string file_name() const override { return "letters"; }
  void save(const std::filesystem::path&) const override {}

 private:
  int64_t vocab_;
  std::vector<int64_t> eos_;
};

// A random 40-token model whose output depends on its input.
flextron::model::Transformer letter_model(flextron::model::ModelConfig& config) {
  config.vocab_size = 40;
  torch::manual_seed(7);
  flextron::model::Transformer model(config);
  model->eval();
  // Small tied embeddings: the default N(0, 1) ones make every token predict itself.
  torch::NoGradGuard no_grad;
  model->model->embed_tokens->weight.mul_(0.1);
  return model;
}

TEST(GenerateEos, StopsAtEveryListedEndOfSequenceId) {
  flextron::model::ModelConfig config;
  auto model = letter_model(config);
  flextron::runtime::GenerateOptions options;
  options.max_tokens = 24;
  // Seeded sampling: the same tokens every run (an untrained model's greedy output is one token
  // repeated).
  options.sampling.temperature = 1.0;
  options.sampling.seed = 3;
  const LetterTokenizer plain(config.vocab_size, {2});
  const auto free_run = flextron::runtime::generate(*model, plain, "abc", options);
  ASSERT_GE(free_run.tokens.size(), 3u) << free_run.stop_reason;
  // The first generated token that is not BOS/EOS and did not occur before it.
  size_t stop_at = 1;
  while (stop_at < free_run.tokens.size() &&
         std::find(free_run.tokens.begin(), free_run.tokens.begin() + stop_at,
                   free_run.tokens[stop_at]) != free_run.tokens.begin() + stop_at)
    ++stop_at;
  ASSERT_LT(stop_at, free_run.tokens.size()) << "the run repeats one token";
  const LetterTokenizer listed(config.vocab_size, {2, free_run.tokens[stop_at]});
  const auto stopped = flextron::runtime::generate(*model, listed, "abc", options);
  EXPECT_EQ(stopped.stop_reason, "eos");
  EXPECT_EQ(stopped.tokens,
            std::vector<int64_t>(free_run.tokens.begin(), free_run.tokens.begin() + stop_at));
}

// fork() after a prefill is a sequence of its own: with seed s it generates exactly what a fresh
// sequence seeded s does (same cache, same first-token draw), on both runtimes, and its
// log-probabilities are recorded as the original's are.
TEST(SequenceFork, EqualsAFreshSequenceWithItsSeed) {
  flextron::model::ModelConfig config;
  auto model = letter_model(config);
  const LetterTokenizer tokenizer(config.vocab_size, {2});
  flextron::runtime::FastDecoder engine(*model);
  const auto prompt = tokenizer.encode("abcab", true);
  flextron::runtime::SamplingOptions sampling;
  sampling.temperature = 1.0;
  auto run = [](flextron::runtime::Sequence& s) {
    while (!s.finished()) s.decode_step();
    return s.tokens();
  };
  for (bool fast : {false, true}) {
    SCOPED_TRACE(fast ? "fast runtime" : "torch forward");
    auto make = [&](uint64_t seed) {
      auto options = sampling;
      options.seed = seed;
      auto s = fast ? std::make_unique<flextron::runtime::Sequence>(
                          engine, tokenizer, prompt, 16, options, flextron::model::Architecture{})
                    : std::make_unique<flextron::runtime::Sequence>(
                          *model, tokenizer, prompt, 16, options, flextron::model::Architecture{});
      s->record_logprobs(2);
      return s;
    };
    auto leader = make(5);
    leader->prefill();
    auto forked = leader->fork(9);
    // Step the two in turns: a cache they shared would show.
    while (!leader->finished() || !forked->finished())
      for (auto* s : {leader.get(), forked.get()})
        if (!s->finished()) s->decode_step();
    auto fresh = make(9);
    fresh->prefill();
    const auto forked_tokens = forked->tokens();
    EXPECT_EQ(forked_tokens, run(*fresh));
    EXPECT_NE(forked_tokens, leader->tokens());
    // Forking leaves the original as it was.
    auto again = make(5);
    again->prefill();
    EXPECT_EQ(leader->tokens(), run(*again));
    const auto mine = leader->take_logprobs(), alone = again->take_logprobs();
    ASSERT_EQ(mine.size(), alone.size());
    for (size_t i = 0; i < mine.size(); ++i)
      EXPECT_EQ(mine[i].token.logprob, alone[i].token.logprob);
    const auto a = forked->take_logprobs(), b = fresh->take_logprobs();
    ASSERT_EQ(a.size(), forked_tokens.size());
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].token.id, forked_tokens[i]);
      EXPECT_EQ(a[i].token.logprob, b[i].token.logprob);
      ASSERT_EQ(a[i].top.size(), 2u);
      EXPECT_GE(a[i].top[0].logprob, a[i].top[1].logprob);
      EXPECT_GE(a[i].top[0].logprob, a[i].token.logprob);
    }
    // A sequence that has decoded cannot fork.
    EXPECT_THROW(leader->fork(1), flextron::Error);
  }
}

}  // namespace
