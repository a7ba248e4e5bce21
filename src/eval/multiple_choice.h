// Multiple-choice evaluation in the manner of lm-evaluation-harness: for every choice, the
// log-likelihood of the continuation (delimiter + choice) given the context,
//   ll_i = sum over continuation tokens t of log p(t | context, earlier continuation tokens),
// then acc = [argmax_i ll_i == label] and acc_norm = [argmax_i ll_i / chars_i == label], where
// chars_i is the choice's length in characters (Unicode code points, as Python's len), not
// tokens. Tokenization follows the harness: whole = encode(context + continuation),
// continuation tokens = whole[len(encode(context)):], with trailing spaces of the context moved
// to the continuation; inputs longer than the model's context keep their last tokens. Our models
// are trained with BOS at the start of a document, so BOS precedes the context.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/transformer.h"
#include "text/tokenizer.h"

namespace flextron::eval {

struct ChoiceExample {
  std::string context;
  std::vector<std::string> choices;
  int64_t label = 0;
  int64_t line = 0;  // 1-based line in the task file
};

// One example per non-empty line of a JSONL file, in any of three layouts:
//   ours:       {"context": str, "choices": [str], "label": int}
//   HellaSwag:  {"ctx": str, "endings": [str], "label": int or "int"}
//   ARC:        {"question": str, "choices": {"text": [str], "label": [str]}, "answerKey": str};
//               the context is "Question: <question>\nAnswer:" (the harness's ARC prompt).
// Throws flextron::Error naming file:line and the field for a malformed line, a missing field or
// a label out of range; and for a file with no examples.
std::vector<ChoiceExample> load_choice_task(const std::filesystem::path& file);

struct ChoiceOptions {
  std::string delimiter = " ";  // between context and choice (the harness's target_delimiter)
  model::Architecture arch;     // empty: full model
  model::LayerRouter* router = nullptr;  // when set, routes instead of `arch`; not owned
};

struct ChoiceScores {
  std::vector<double> loglik;   // per choice, nats
  std::vector<int64_t> tokens;  // continuation tokens per choice
  std::vector<int64_t> chars;   // characters per choice (acc_norm's divisor)
  int64_t predicted = 0;        // argmax of loglik
  int64_t predicted_norm = 0;   // argmax of loglik / chars
};

ChoiceScores score_choices(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                           const ChoiceExample& example, const ChoiceOptions& options);

struct ChoiceTaskResult {
  int64_t examples = 0;
  double acc = 0.0, acc_stderr = 0.0;
  double acc_norm = 0.0, acc_norm_stderr = 0.0;
  nlohmann::json to_json() const;
};

// progress(done, total) after every example, when given.
ChoiceTaskResult evaluate_choices(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                                  const std::vector<ChoiceExample>& examples,
                                  const ChoiceOptions& options,
                                  const std::function<void(int64_t, int64_t)>& progress = {});

// Number of Unicode code points in valid UTF-8 text.
int64_t count_code_points(const std::string& text);

}  // namespace flextron::eval
