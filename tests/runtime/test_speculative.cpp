// Self-speculative decoding (runtime/speculative.h) on stories260K: greedy output equals plain
// decoding token for token, the sampled distribution is the full model's (chi-square), and a
// round's rollback leaves both caches as plain decoding of the accepted text builds them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "core/error.h"
#include "model/elastic_space.h"
#include "runtime/fast_decoder.h"
#include "runtime/fast_generate.h"
#include "runtime/sequence.h"
#include "runtime/speculative.h"
#include "stories260k.h"
#include "text/tokenizer.h"

namespace {

using flextron::model::Architecture;
using flextron::runtime::DraftLength;
using flextron::runtime::EngineCache;
using flextron::runtime::EngineOptions;
using flextron::runtime::FastDecoder;
using flextron::runtime::Sampler;
using flextron::runtime::SamplingOptions;
using flextron::runtime::Sequence;
using flextron::runtime::SpeculativeOptions;

struct Stories {
  flextron::model::Transformer model = flextron::testing::load_stories260k();
  std::unique_ptr<flextron::text::Tokenizer> tokenizer = flextron::text::load_llama2c_tokenizer(
      flextron::testing::shared_data() / "stories260K/tok512.bin", 512);
  Architecture uniform(double mlp, double attn) const {
    const auto& c = model->config();
    Architecture arch(static_cast<size_t>(c.num_hidden_layers));
    for (auto& w : arch)
      w = {flextron::model::mlp_width_for_fraction(mlp, c.intermediate_size, 8),
           flextron::model::kv_groups_for_fraction(attn, c.num_key_value_heads)};
    return arch;
  }
};

// Prompts of 1 to ~400 tokens: BOS alone, short phrases, and long ones crossing the engine's
// prefill chunk (16 rows below) many times over.
std::vector<std::vector<int64_t>> prompts(const flextron::text::Tokenizer& tokenizer, int count) {
  const char* words[] = {"Once upon a time",
                         "there was a little girl",
                         "named Lily.",
                         "She liked to play",
                         "with her dog",
                         "in the park.",
                         "One day,",
                         "the sun was hot",
                         "and the sky was blue."};
  std::vector<std::vector<int64_t>> out;
  std::mt19937 rng(11);
  for (int i = 0; i < count; ++i) {
    std::string text;
    const int pieces = i == 0 ? 0 : (i % 5 == 4 ? 70 : 1 + i % 4);
    for (int p = 0; p < pieces; ++p) text += std::string(p ? " " : "") + words[rng() % 9];
    out.push_back(tokenizer.encode(text, /*add_bos=*/true));
  }
  return out;
}

std::vector<int64_t> run(FastDecoder& engine, const flextron::text::Tokenizer& tokenizer,
                         const std::vector<int64_t>& prompt, int64_t max_tokens,
                         const SamplingOptions& sampling, const SpeculativeOptions* speculative,
                         std::string* stop_reason = nullptr) {
  Sequence s(engine, tokenizer, prompt, max_tokens, sampling, {});
  if (speculative != nullptr) s.speculate(*speculative);
  s.prefill();
  while (!s.finished()) s.decode_step();
  if (stop_reason != nullptr) *stop_reason = s.stop_reason();
  return s.tokens();
}

TEST(FastDecoder, VerifyRowsAreDecodeStepsBitForBit) {
  Stories stories;
  const std::vector<int64_t> prompt{1, 403, 407, 261, 378};
  const std::vector<int64_t> next{339, 261, 260, 442, 265, 302};
  // f32, and q8_0 / q4_0 weights with quantized activations (their rows quantized alone).
  using flextron::runtime::qk::WeightFormat;
  for (auto format : {WeightFormat::F32, WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    SCOPED_TRACE(flextron::runtime::qk::format_name(format));
    EngineOptions options;
    options.format = format;
    FastDecoder engine(*stories.model, options);
    const int64_t vocab = engine.config().vocab_size;
    for (const auto& arch : {Architecture{}, stories.uniform(0.5, 0.5)}) {
      auto plain = engine.make_cache(64, arch), verified = engine.make_cache(64, arch);
      engine.prefill(prompt, plain, arch);
      engine.prefill(prompt, verified, arch);
      std::vector<float> rows(next.size() * static_cast<size_t>(vocab));
      engine.verify(next.data(), static_cast<int64_t>(next.size()), verified, arch, rows.data());
      for (size_t i = 0; i < next.size(); ++i) {
        const float* step = engine.decode(next[i], plain, arch);
        EXPECT_EQ(std::memcmp(step, rows.data() + i * vocab, vocab * sizeof(float)), 0)
            << "row " << i;
      }
      EXPECT_EQ(plain.stored(), verified.stored());
    }
  }
}

// 20 prompts, k in {1, 2, 4, 8} and adaptive, drafts at three widths: the same tokens and stop
// reason as plain greedy decoding, some runs ending at the model's context (512 positions).
TEST(Speculative, GreedyOutputIsPlainDecodingExactly) {
  Stories stories;
  EngineOptions options;
  options.max_rows = 16;  // prompts cross the prefill chunk
  FastDecoder engine(*stories.model, options);
  const auto all = prompts(*stories.tokenizer, 20);
  const std::vector<Architecture> drafts{stories.uniform(0.25, 0.25), stories.uniform(0.5, 0.5),
                                         stories.uniform(0.75, 1.0)};
  SamplingOptions greedy;
  greedy.temperature = 0.0;
  int at_context = 0, rounds = 0;
  double accepted = 0, drafted = 0;
  for (size_t p = 0; p < all.size(); ++p) {
    // Every fifth run long enough to reach the context limit.
    const int64_t max_tokens = p % 5 == 4 ? 1000 : 40 + 13 * static_cast<int64_t>(p);
    std::string plain_reason;
    const auto plain =
        run(engine, *stories.tokenizer, all[p], max_tokens, greedy, nullptr, &plain_reason);
    at_context += plain_reason == "context";
    for (int64_t k : {1, 2, 4, 8, 0}) {
      const auto& draft = drafts[(p + static_cast<size_t>(k)) % drafts.size()];
      SpeculativeOptions spec{draft, k};
      Sequence s(engine, *stories.tokenizer, all[p], max_tokens, greedy, {});
      s.speculate(spec);
      s.prefill();
      while (!s.finished()) s.decode_step();
      ASSERT_EQ(s.tokens(), plain) << "prompt " << p << ", k " << k;
      EXPECT_EQ(s.stop_reason(), plain_reason);
      rounds += static_cast<int>(s.speculative_stats()->rounds);
      accepted += static_cast<double>(s.speculative_stats()->accepted);
      drafted += static_cast<double>(s.speculative_stats()->drafted);
    }
  }
  EXPECT_GE(at_context, 2);
  EXPECT_GT(rounds, 0);
  EXPECT_GT(accepted, 0.0);      // some drafts were kept: the agreement path ran
  EXPECT_LT(accepted, drafted);  // and some were not: the correction path ran
}

// After every round, the verifier's cache equals plain decoding's of the accepted tokens (the
// prompt prefilled, each later token decoded), and the draft's equals the same at its widths
// over the prefix it holds.
TEST(Speculative, RollbackLeavesBothCachesAsPlainDecodingBuildsThem) {
  Stories stories;
  FastDecoder engine(*stories.model);
  const auto prompt = stories.tokenizer->encode("Once upon a time, there was a", true);
  const auto draft = stories.uniform(0.25, 0.5);
  SamplingOptions sampling;
  sampling.temperature = 0.8;
  sampling.seed = 3;
  for (int64_t k : {1, 3, 8}) {
    Sequence s(engine, *stories.tokenizer, prompt, 200, sampling, {});
    s.speculate({draft, k});
    s.prefill();
    int checked = 0;
    while (!s.finished() && checked < 12) {
      s.decode_step();
      if (s.finished()) break;
      std::vector<int64_t> stream = prompt;
      stream.insert(stream.end(), s.tokens().begin(), s.tokens().end());
      auto expect = [&](const EngineCache& got, const Architecture& arch) {
        auto cache = engine.make_cache(got.capacity(), arch);
        engine.prefill(prompt, cache, arch);
        for (int64_t pos = static_cast<int64_t>(prompt.size()); pos < got.length(); ++pos)
          engine.decode(stream[static_cast<size_t>(pos)], cache, arch);
        EXPECT_EQ(cache.stored(), got.stored()) << "k " << k << ", round " << checked;
      };
      // The verifier holds every accepted token but the last (the next step's input).
      ASSERT_EQ(s.engine_cache()->length(), static_cast<int64_t>(stream.size()) - 1);
      expect(*s.engine_cache(), {});
      ASSERT_LE(s.draft_cache()->length(), s.engine_cache()->length());
      expect(*s.draft_cache(), draft);
      ++checked;
    }
    EXPECT_GE(checked, 5);
  }
}

// Pearson's chi-square of counts against probabilities, pooling the categories expected fewer
// than 5 times; `df` gets the degrees of freedom.
double chi_square(const std::map<int64_t, int>& counts, const std::vector<double>& p, int draws,
                  int* df) {
  double stat = 0.0, pooled_expected = 0.0, pooled_seen = 0.0;
  int categories = 0;
  for (size_t id = 0; id < p.size(); ++id) {
    const double expected = p[id] * draws;
    const auto it = counts.find(static_cast<int64_t>(id));
    const double seen = it == counts.end() ? 0.0 : it->second;
    if (expected < 5.0) {
      pooled_expected += expected;
      pooled_seen += seen;
      continue;
    }
    stat += (seen - expected) * (seen - expected) / expected;
    ++categories;
  }
  if (pooled_expected > 0.0) {
    stat += (pooled_seen - pooled_expected) * (pooled_seen - pooled_expected) /
            std::max(pooled_expected, 1e-9);
    ++categories;
  }
  *df = categories - 1;
  return stat;
}

// The chi-square value a correct sampler exceeds with probability 1e-4 (Wilson-Hilferty).
double critical_value(int df) {
  const double z = 3.719;  // the standard normal's 1 - 1e-4 quantile
  const double k = df;
  return k * std::pow(1.0 - 2.0 / (9.0 * k) + z * std::sqrt(2.0 / (9.0 * k)), 3.0);
}

// The next-token distributions p (full model) and q (a narrow draft) after a prompt, at
// temperature 1.
struct NextToken {
  std::vector<double> p, q;
};
NextToken next_token(Stories& stories, FastDecoder& engine, const std::vector<int64_t>& prefix,
                     const Architecture& draft) {
  NextToken out;
  Sampler sampler(SamplingOptions{});
  auto full = engine.make_cache(64), narrow = engine.make_cache(64, draft);
  sampler.distribution(engine.prefill(prefix, full), engine.config().vocab_size, out.p);
  sampler.distribution(engine.prefill(prefix, narrow, draft), engine.config().vocab_size, out.q);
  (void)stories;
  return out;
}

// The acceptance rule alone, on real distributions: drafts drawn from q, judged against p, give
// p. The rule without its residual (a rejected draft replaced by a draw from p itself) is
// biased toward what the draft likes, and the same test rejects it.
TEST(Speculative, AcceptanceRuleSamplesTheFullModelsDistribution) {
  Stories stories;
  FastDecoder engine(*stories.model);
  const auto prefix = stories.tokenizer->encode("Once upon a time", true);
  const auto d = next_token(stories, engine, prefix, stories.uniform(0.25, 0.25));
  double differ = 0.0;
  for (size_t i = 0; i < d.p.size(); ++i) differ += std::abs(d.p[i] - d.q[i]);
  ASSERT_GT(differ, 0.2);  // the draft is far from the model: a wrong rule shows
  constexpr int kDraws = 20000;
  Sampler sampler(SamplingOptions{1.0, 1.0, 7});
  std::map<int64_t, int> right, wrong;
  for (int i = 0; i < kDraws; ++i) {
    const int64_t draft = sampler.draw(d.q);
    ++right[flextron::runtime::judge_draft(d.p, d.q, draft, sampler).token];
    const auto id = static_cast<size_t>(draft);
    const bool keep = sampler.uniform() * d.q[id] < d.p[id];
    ++wrong[keep ? draft : sampler.draw(d.p)];
  }
  int df = 0;
  const double good = chi_square(right, d.p, kDraws, &df);
  EXPECT_LT(good, critical_value(df)) << "df " << df;
  const double bad = chi_square(wrong, d.p, kDraws, &df);
  EXPECT_GT(bad, critical_value(df)) << "df " << df;
}

// End to end: the token a speculative round samples after a fixed prefix (prompt + the first
// token, conditioned on its most frequent value) is distributed as the full model's next token.
TEST(Speculative, SampledTokensFollowTheFullModel) {
  Stories stories;
  FastDecoder engine(*stories.model);
  const auto prompt = stories.tokenizer->encode("Once upon a time", true);
  const auto draft = stories.uniform(0.25, 0.25);
  constexpr int kRuns = 6000;
  std::map<int64_t, std::map<int64_t, int>> second;  // first token -> second token's counts
  for (int seed = 0; seed < kRuns; ++seed) {
    SamplingOptions sampling{1.0, 1.0, static_cast<uint64_t>(seed)};
    Sequence s(engine, *stories.tokenizer, prompt, 3, sampling, {});
    s.speculate({draft, 2});
    s.prefill();
    if (s.finished()) continue;
    s.decode_step();
    if (s.tokens().size() >= 2) ++second[s.tokens()[0]][s.tokens()[1]];
  }
  int64_t first = -1, most = 0;
  for (const auto& [id, counts] : second) {
    int64_t n = 0;
    for (const auto& [_, c] : counts) n += c;
    if (n > most) {
      most = n;
      first = id;
    }
  }
  ASSERT_GT(most, 500);
  auto prefix = prompt;
  prefix.push_back(first);
  const auto d = next_token(stories, engine, prefix, draft);
  int df = 0;
  const double stat = chi_square(second[first], d.p, static_cast<int>(most), &df);
  EXPECT_LT(stat, critical_value(df)) << "df " << df << ", " << most << " draws";
  // A seed gives the same text every time.
  SamplingOptions sampling{0.8, 0.9, 99};
  SpeculativeOptions spec{draft, 0};
  EXPECT_EQ(run(engine, *stories.tokenizer, prompt, 60, sampling, &spec),
            run(engine, *stories.tokenizer, prompt, 60, sampling, &spec));
}

TEST(Speculative, DraftLengthFollowsTheAcceptance) {
  DraftLength fixed(5, 0.3);
  fixed.update(5, 0);
  EXPECT_EQ(fixed.next(), 5);
  DraftLength adaptive(0, 0.2);
  for (int i = 0; i < 30; ++i) adaptive.update(adaptive.next(), adaptive.next());
  const int64_t high = adaptive.next();
  for (int i = 0; i < 30; ++i) adaptive.update(adaptive.next(), 0);
  EXPECT_GT(high, 4);
  // A draft that is never right: plain decoding, with a round of 1 after kProbeAfter steps,
  // then after 4 and 16 times as many, then none.
  EXPECT_EQ(adaptive.next(), 0);
  int64_t wait = DraftLength::kProbeAfter;
  for (int probe = 0; probe < DraftLength::kMaxProbes; ++probe, wait *= 4) {
    for (int64_t i = 0; i + 1 < wait; ++i) adaptive.skipped();
    EXPECT_EQ(adaptive.next(), 0) << "probe " << probe;
    adaptive.skipped();
    EXPECT_EQ(adaptive.next(), 1) << "probe " << probe;
    adaptive.update(1, 0);
    EXPECT_EQ(adaptive.next(), 0);
  }
  for (int64_t i = 0; i < 100 * wait; ++i) adaptive.skipped();
  EXPECT_EQ(adaptive.next(), 0);
  EXPECT_THROW(DraftLength(17, 0.3), flextron::Error);
  EXPECT_THROW(DraftLength(-1, 0.3), flextron::Error);
}

TEST(Speculative, ErrorsNameTheProblem) {
  Stories stories;
  FastDecoder engine(*stories.model);
  Sequence s(engine, *stories.tokenizer, {1}, 10, SamplingOptions{}, {});
  EXPECT_THROW(s.speculate({}), flextron::Error);
  Architecture wrong(3);
  EXPECT_THROW(s.speculate({wrong, 0}), flextron::Error);
  Sequence torch_path(*stories.model, *stories.tokenizer, {1}, 10, SamplingOptions{}, {});
  EXPECT_THROW(torch_path.speculate({stories.uniform(0.5, 0.5), 0}), flextron::Error);
  const std::vector<int64_t> too_many(65, 1);
  auto cache = engine.make_cache(100);
  std::vector<float> rows(65 * 512);
  EXPECT_THROW(engine.verify(too_many.data(), 65, cache, {}, rows.data()), flextron::Error);
}

}  // namespace
