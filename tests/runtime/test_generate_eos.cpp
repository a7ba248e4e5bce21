// Generation ends at any id the tokenizer lists in eos_ids() (generation_config.json's
// eos_token_id list: Llama 3 ends a turn with <|eot_id|> as well as <|end_of_text|>).
#include <algorithm>

#include <torch/torch.h>

#include "model/config.h"
#include "model/transformer.h"
#include "runtime/generate.h"
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

TEST(GenerateEos, StopsAtEveryListedEndOfSequenceId) {
  flextron::model::ModelConfig config;
  config.vocab_size = 40;
  torch::manual_seed(7);
  flextron::model::Transformer model(config);
  model->eval();
  {
    // Small tied embeddings: the default N(0, 1) ones make every token predict itself.
    torch::NoGradGuard no_grad;
    model->model->embed_tokens->weight.mul_(0.1);
  }
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

}  // namespace
