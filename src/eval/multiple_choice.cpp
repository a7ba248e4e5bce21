#include "eval/multiple_choice.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <torch/torch.h>

#include "core/error.h"
#include "text/utf8.h"

namespace flextron::eval {

namespace {

// Reads one line's example in whichever layout its fields show.
ChoiceExample parse_example(const nlohmann::json& j, const std::string& where) {
  auto string_field = [&](const char* name) {
    if (!j.contains(name)) fail(where, std::string("missing field \"") + name + "\"");
    if (!j[name].is_string()) fail(where, std::string("field \"") + name + "\" must be a string");
    return j[name].get<std::string>();
  };
  auto string_list = [&](const nlohmann::json& v, const std::string& name) {
    if (!v.is_array() || v.empty())
      fail(where, "field \"" + name + "\" must be a non-empty list of strings");
    std::vector<std::string> out;
    for (const auto& s : v) {
      if (!s.is_string()) fail(where, "field \"" + name + "\" must hold only strings");
      out.push_back(s.get<std::string>());
    }
    return out;
  };
  auto integer_label = [&](const char* name) {
    if (!j.contains(name)) fail(where, std::string("missing field \"") + name + "\"");
    const auto& v = j[name];
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_string()) {  // HellaSwag's files store the label as a string
      const auto s = v.get<std::string>();
      if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit))
        return static_cast<int64_t>(std::stoll(s));
    }
    fail(where, std::string("field \"") + name + "\" must be an integer");
  };

  ChoiceExample e;
  if (j.contains("question") || j.contains("answerKey")) {  // ARC
    e.context = "Question: " + string_field("question") + "\nAnswer:";
    if (!j.contains("choices") || !j["choices"].is_object())
      fail(where, "field \"choices\" must be an object with \"text\" and \"label\" lists (ARC)");
    const auto& c = j["choices"];
    e.choices = string_list(c.value("text", nlohmann::json()), "choices.text");
    const auto labels = string_list(c.value("label", nlohmann::json()), "choices.label");
    if (labels.size() != e.choices.size())
      fail(where, "choices.text and choices.label differ in length");
    const auto key = string_field("answerKey");
    const auto it = std::find(labels.begin(), labels.end(), key);
    if (it == labels.end()) fail(where, "answerKey \"" + key + "\" is not one of choices.label");
    e.label = it - labels.begin();
  } else if (j.contains("ctx") || j.contains("endings")) {  // HellaSwag
    e.context = string_field("ctx");
    if (!j.contains("endings")) fail(where, "missing field \"endings\"");
    e.choices = string_list(j["endings"], "endings");
    e.label = integer_label("label");
  } else {
    e.context = string_field("context");
    if (!j.contains("choices")) fail(where, "missing field \"choices\"");
    e.choices = string_list(j["choices"], "choices");
    e.label = integer_label("label");
  }
  if (e.label < 0 || e.label >= static_cast<int64_t>(e.choices.size()))
    fail(where, "label " + std::to_string(e.label) + " out of range for " +
                    std::to_string(e.choices.size()) + " choices");
  return e;
}

// log p(continuation | context) per choice, for token sequences sharing nothing in particular.
// inputs[i] = the model's input tokens, targets counted from the end: the last n_i positions'
// next-token log-probabilities are summed.
std::vector<double> continuation_logliks(model::TransformerImpl& model,
                                         const std::vector<std::vector<int64_t>>& sequences,
                                         const std::vector<int64_t>& continuation_lengths,
                                         const ChoiceOptions& options) {
  c10::InferenceMode guard;
  const int64_t max_ctx = model.config().max_position_embeddings;
  // A router picks attention widths per sequence: one sequence per forward then.
  const size_t group = options.router != nullptr ? 1 : sequences.size();
  std::vector<double> out(sequences.size());
  for (size_t start = 0; start < sequences.size(); start += group) {
    const size_t end = std::min(sequences.size(), start + group);
    // Input = all tokens but the last, keeping the last max_ctx (the harness's left truncation).
    std::vector<std::vector<int64_t>> inputs;
    int64_t width = 0;
    for (size_t i = start; i < end; ++i) {
      const auto& s = sequences[i];
      const int64_t n = static_cast<int64_t>(s.size()) - 1;
      const int64_t first = std::max<int64_t>(0, n - max_ctx);
      inputs.emplace_back(s.begin() + first, s.begin() + n);
      width = std::max<int64_t>(width, static_cast<int64_t>(inputs.back().size()));
    }
    // Right padding: causal attention keeps it out of every real position.
    auto batch = torch::zeros({static_cast<int64_t>(inputs.size()), width}, torch::kLong);
    for (size_t r = 0; r < inputs.size(); ++r)
      batch[static_cast<int64_t>(r)]
          .narrow(0, 0, static_cast<int64_t>(inputs[r].size()))
          .copy_(torch::tensor(inputs[r], torch::kLong));
    const auto* arch = options.arch.empty() ? nullptr : &options.arch;
    const auto logp =
        torch::log_softmax(model.forward(batch.to(model.device()), nullptr, arch, options.router)
                               .to(torch::kDouble),
                           -1)
            .cpu();
    for (size_t r = 0; r < inputs.size(); ++r) {
      const auto& s = sequences[start + r];
      const int64_t len = static_cast<int64_t>(inputs[r].size());
      const int64_t n = continuation_lengths[start + r];
      // Position p predicts token s[offset + p + 1]; the continuation is s's last n tokens.
      const int64_t offset = static_cast<int64_t>(s.size()) - 1 - len;
      double sum = 0.0;
      for (int64_t p = len - n; p < len; ++p)
        sum +=
            logp[static_cast<int64_t>(r)][p][s[static_cast<size_t>(offset + p + 1)]].item<double>();
      out[start + r] = sum;
    }
  }
  return out;
}

int64_t argmax(const std::vector<double>& v) {
  return std::max_element(v.begin(), v.end()) - v.begin();
}

}  // namespace

int64_t count_code_points(const std::string& text) {
  // Every code point has exactly one byte that is not a continuation byte (10xxxxxx).
  return std::count_if(text.begin(), text.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

std::vector<ChoiceExample> load_choice_task(const std::filesystem::path& file) {
  const std::string text = text::read_utf8_file(file);
  std::vector<ChoiceExample> out;
  std::istringstream lines(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(lines, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = file.string() + ":" + std::to_string(number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail(where, std::string("invalid JSON: ") + e.what());
    }
    if (!j.is_object()) fail(where, "each line must be a JSON object");
    auto example = parse_example(j, where);
    example.line = number;
    out.push_back(std::move(example));
  }
  if (out.empty()) fail(file.string(), "no examples in this task file");
  return out;
}

ChoiceScores score_choices(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                           const ChoiceExample& example, const ChoiceOptions& options) {
  // Trailing spaces of the context belong to the continuation (the harness's _encode_pair).
  std::string context = example.context;
  const size_t kept = context.find_last_not_of(' ') + 1;  // npos + 1 == 0: all spaces
  const std::string moved = context.substr(kept);
  context.resize(kept);
  const auto context_tokens = tokenizer.encode(context, /*add_bos=*/true);

  ChoiceScores scores;
  std::vector<std::vector<int64_t>> sequences;
  for (size_t i = 0; i < example.choices.size(); ++i) {
    const auto& choice = example.choices[i];
    auto whole = tokenizer.encode(context + moved + options.delimiter + choice, true);
    const auto n = static_cast<int64_t>(whole.size()) - static_cast<int64_t>(context_tokens.size());
    if (n < 1)
      fail("line " + std::to_string(example.line),
           "choice " + std::to_string(i) + " adds no tokens to the context");
    scores.tokens.push_back(n);
    scores.chars.push_back(std::max<int64_t>(1, count_code_points(choice)));
    sequences.push_back(std::move(whole));
  }
  scores.loglik = continuation_logliks(model, sequences, scores.tokens, options);
  std::vector<double> normalized;
  for (size_t i = 0; i < scores.loglik.size(); ++i)
    normalized.push_back(scores.loglik[i] / static_cast<double>(scores.chars[i]));
  scores.predicted = argmax(scores.loglik);
  scores.predicted_norm = argmax(normalized);
  return scores;
}

nlohmann::json ChoiceTaskResult::to_json() const {
  return {{"examples", examples},
          {"acc", acc},
          {"acc_stderr", acc_stderr},
          {"acc_norm", acc_norm},
          {"acc_norm_stderr", acc_norm_stderr}};
}

ChoiceTaskResult evaluate_choices(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                                  const std::vector<ChoiceExample>& examples,
                                  const ChoiceOptions& options,
                                  const std::function<void(int64_t, int64_t)>& progress) {
  ChoiceTaskResult r;
  int64_t right = 0, right_norm = 0;
  for (const auto& e : examples) {
    const auto s = score_choices(model, tokenizer, e, options);
    right += s.predicted == e.label;
    right_norm += s.predicted_norm == e.label;
    ++r.examples;
    if (progress) progress(r.examples, static_cast<int64_t>(examples.size()));
  }
  const auto n = static_cast<double>(r.examples);
  r.acc = static_cast<double>(right) / n;
  r.acc_norm = static_cast<double>(right_norm) / n;
  // Standard error of a mean of 0/1 outcomes (the harness's sample standard deviation / sqrt n).
  auto stderr_of = [&](double p) {
    return r.examples > 1 ? std::sqrt(p * (1.0 - p) * n / (n - 1.0) / n) : 0.0;
  };
  r.acc_stderr = stderr_of(r.acc);
  r.acc_norm_stderr = stderr_of(r.acc_norm);
  return r;
}

}  // namespace flextron::eval
