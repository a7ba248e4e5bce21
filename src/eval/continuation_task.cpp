#include "eval/continuation_task.h"

#include <algorithm>
#include <random>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace flextron::eval {

namespace {

std::string join(const std::vector<std::string>& words, int64_t start, int64_t count) {
  std::string out;
  for (int64_t i = start; i < start + count; ++i) {
    if (i > start) out += ' ';
    out += words[static_cast<size_t>(i)];
  }
  return out;
}

}  // namespace

std::vector<ChoiceExample> make_continuation_task(const std::string& text,
                                                  const ContinuationTaskOptions& o,
                                                  const std::string& where) {
  if (o.examples < 1 || o.choices < 2 || o.context_words < 1 || o.continuation_words < 1)
    fail(where, "need examples >= 1, choices >= 2, context and continuation words >= 1");
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string w; in >> w;) words.push_back(w);
  const auto n = static_cast<int64_t>(words.size());
  const int64_t span = o.context_words + o.continuation_words;
  // Each example claims its own stretch of text: examples never overlap.
  if (n < o.examples * span + o.continuation_words * o.choices)
    fail(where, "holds " + std::to_string(n) + " words; " + std::to_string(o.examples) +
                    " examples of " + std::to_string(span) + " words need more text");
  std::mt19937_64 rng(o.seed);
  const int64_t stride = n / o.examples;
  std::vector<ChoiceExample> out;
  for (int64_t e = 0; e < o.examples; ++e) {
    // Start somewhere in this example's stretch [e * stride, (e + 1) * stride - span].
    const int64_t room = std::max<int64_t>(0, stride - span);
    const int64_t start = e * stride + std::uniform_int_distribution<int64_t>(0, room)(rng);
    const int64_t answer_at = start + o.context_words;
    ChoiceExample ex;
    ex.context = join(words, start, o.context_words);
    const std::string answer = join(words, answer_at, o.continuation_words);
    std::set<std::string> seen{answer};
    std::vector<std::string> choices{answer};
    std::uniform_int_distribution<int64_t> anywhere(0, n - o.continuation_words);
    for (int tries = 0; static_cast<int64_t>(choices.size()) < o.choices && tries < 1000; ++tries) {
      const int64_t at = anywhere(rng);
      if (at + o.continuation_words > start && at < answer_at + o.continuation_words) continue;
      auto candidate = join(words, at, o.continuation_words);
      if (seen.insert(candidate).second) choices.push_back(std::move(candidate));
    }
    if (static_cast<int64_t>(choices.size()) < o.choices)
      fail(where, "too repetitive to draw " + std::to_string(o.choices) + " distinct choices");
    std::shuffle(choices.begin(), choices.end(), rng);
    ex.label = std::find(choices.begin(), choices.end(), answer) - choices.begin();
    ex.choices = std::move(choices);
    ex.line = e + 1;
    out.push_back(std::move(ex));
  }
  return out;
}

std::string choice_task_to_jsonl(const std::vector<ChoiceExample>& examples) {
  std::string out;
  for (const auto& e : examples)
    out +=
        nlohmann::json{{"context", e.context}, {"choices", e.choices}, {"label", e.label}}.dump() +
        "\n";
  return out;
}

}  // namespace flextron::eval
