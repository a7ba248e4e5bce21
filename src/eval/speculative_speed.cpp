#include "eval/speculative_speed.h"

#include <algorithm>

#include "core/error.h"
#include "runtime/fast_generate.h"

namespace flextron::eval {

namespace {
double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

double SpeculativeSpeed::plain_median() const {
  return median(plain);
}
double SpeculativeSpeed::speculative_median() const {
  return median(speculative);
}

double SpeculativeSpeed::speedup() const {
  std::vector<double> ratios;
  for (size_t i = 0; i < plain.size() && i < speculative.size(); ++i)
    if (plain[i] > 0) ratios.push_back(speculative[i] / plain[i]);
  return median(ratios);
}

nlohmann::json SpeculativeSpeed::to_json() const {
  return {{"prompts", prompts},
          {"plain_tokens_per_second", plain},
          {"speculative_tokens_per_second", speculative},
          {"plain_median", plain_median()},
          {"speculative_median", speculative_median()},
          {"speedup", speedup()},
          {"acceptance_rate", stats.acceptance_rate()},
          {"tokens_per_round", stats.tokens_per_round()},
          {"rounds", stats.rounds},
          {"mismatches", mismatches}};
}

std::vector<std::string> default_speed_prompts() {
  return {"Once upon a time, there was a little girl named",
          "The dog ran to the park and",
          "Tom and his mom went to the store.",
          "One day, a big bird",
          "Lily liked to play with her toys. One day she",
          "There was a small house in the woods.",
          "The sun was hot, so the children",
          "Ben had a red ball."};
}

SpeculativeSpeed measure_speculative_speed(runtime::FastDecoder& engine,
                                           const text::Tokenizer& tokenizer,
                                           const std::vector<std::string>& prompts,
                                           const SpeculativeSpeedOptions& options,
                                           const std::function<void(int64_t)>& on_repeat) {
  if (prompts.empty()) fail("--prompts", "no prompt to measure");
  if (options.repeat < 1) fail("--repeat", "must be >= 1");
  SpeculativeSpeed out;
  out.prompts = static_cast<int64_t>(prompts.size());
  runtime::GenerateOptions plain;
  plain.max_tokens = options.tokens;
  plain.sampling = options.sampling;
  plain.arch = options.verifier;
  auto speculative = plain;
  speculative.speculative = options.speculative;
  const bool greedy = options.sampling.temperature == 0.0;
  for (int64_t r = 0; r < options.repeat; ++r) {
    double plain_seconds = 0, speculative_seconds = 0;
    int64_t plain_tokens = 0, speculative_tokens = 0;
    for (size_t p = 0; p < prompts.size(); ++p) {
      // Alternate which goes first, so neither always runs on a warmer cache.
      runtime::GenerateResult a, b;
      if ((r + static_cast<int64_t>(p)) % 2 == 0) {
        a = runtime::generate_fast(engine, tokenizer, prompts[p], plain);
        b = runtime::generate_fast(engine, tokenizer, prompts[p], speculative);
      } else {
        b = runtime::generate_fast(engine, tokenizer, prompts[p], speculative);
        a = runtime::generate_fast(engine, tokenizer, prompts[p], plain);
      }
      plain_seconds += a.decode_seconds;
      plain_tokens += a.decode_tokens;
      speculative_seconds += b.decode_seconds;
      speculative_tokens += b.decode_tokens;
      if (b.speculative) out.stats += *b.speculative;
      if (greedy && r == 0 && a.tokens != b.tokens) ++out.mismatches;
    }
    out.plain.push_back(plain_seconds > 0 ? static_cast<double>(plain_tokens) / plain_seconds : 0);
    out.speculative.push_back(speculative_seconds > 0
                                  ? static_cast<double>(speculative_tokens) / speculative_seconds
                                  : 0);
    if (on_repeat) on_repeat(r + 1);
  }
  return out;
}

}  // namespace flextron::eval
