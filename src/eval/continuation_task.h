// A multiple-choice task made from any held-out text, for models and corpora that no published
// benchmark covers (the embedded default trains on the Python documentation): each example is
// `context_words` words of the text, the `continuation_words` words that really follow, and
// `choices - 1` distractor spans of the same length drawn from elsewhere in the text. A model
// that has learned the language scores the true continuation highest (cf. HellaSwag, built the
// same way with adversarial distractors).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/multiple_choice.h"

namespace flextron::eval {

struct ContinuationTaskOptions {
  int64_t examples = 200;
  int64_t choices = 4;
  int64_t context_words = 24;
  int64_t continuation_words = 6;
  uint64_t seed = 1;
};

// Deterministic in (text, options). Throws flextron::Error naming `where` when the text is too
// short for the requested examples.
std::vector<ChoiceExample> make_continuation_task(const std::string& text,
                                                  const ContinuationTaskOptions& options,
                                                  const std::string& where);

// {"context", "choices", "label"} per line.
std::string choice_task_to_jsonl(const std::vector<ChoiceExample>& examples);

}  // namespace flextron::eval
