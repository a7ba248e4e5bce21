// Self-speculative decoding against plain decoding, measured side by side (bench --speculative):
// each repeat generates every prompt plainly and speculatively, interleaved, so the machine's
// load drifts over both alike; the figures are medians over the repeats. Greedy runs also check
// that the two texts are identical.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/fast_decoder.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "text/tokenizer.h"

namespace flextron::eval {

struct SpeculativeSpeedOptions {
  int64_t tokens = 256;  // new tokens per prompt
  int64_t repeat = 3;
  runtime::SamplingOptions sampling{0.0, 1.0, 42};  // greedy unless told
  model::Architecture verifier;                     // empty: the full model
  runtime::SpeculativeOptions speculative;          // the draft and k
};

struct SpeculativeSpeed {
  std::vector<double> plain, speculative;  // decode tokens/s over all prompts, per repeat
  runtime::SpeculativeStats stats;         // the speculative runs' rounds, all repeats
  int64_t prompts = 0;
  int64_t mismatches = 0;  // greedy prompts whose two texts differ (must be 0)
  double plain_median() const;
  double speculative_median() const;
  double speedup() const;  // median over repeats of speculative / plain
  nlohmann::json to_json() const;
};

// Throws flextron::Error when there is no prompt or a prompt does not fit the context.
// on_repeat, when given, is called after each repeat with its number (1-based).
SpeculativeSpeed measure_speculative_speed(runtime::FastDecoder& engine,
                                           const text::Tokenizer& tokenizer,
                                           const std::vector<std::string>& prompts,
                                           const SpeculativeSpeedOptions& options,
                                           const std::function<void(int64_t)>& on_repeat = {});

// Eight story openings, the default prompt set.
std::vector<std::string> default_speed_prompts();

}  // namespace flextron::eval
