// Multiple-choice scoring against a hand computation: the log-likelihood of each continuation
// summed from the model's own log-softmax over the concatenated tokens, acc_norm dividing by
// characters (not bytes, not tokens); and the task file layouts with their errors.
#include <cmath>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "eval/continuation_task.h"
#include "eval/multiple_choice.h"
#include "io/llama2c_checkpoint.h"
#include "model/elastic_space.h"
#include "model/transformer.h"
#include "stories260k.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

using flextron::Error;
using flextron::eval::ChoiceExample;
using flextron::testing::scratch_dir;
using flextron::testing::shared_data;

std::unique_ptr<flextron::text::Tokenizer> stories_tokenizer() {
  return flextron::text::load_llama2c_tokenizer(shared_data() / "stories260K/tok512.bin", 512);
}

// log p(continuation | context) written out directly: one forward over context + continuation
// tokens, the continuation being what encode(context + " " + choice) adds to encode(context).
double hand_loglik(flextron::model::TransformerImpl& m, const flextron::text::Tokenizer& tok,
                   const std::string& context, const std::string& choice) {
  torch::NoGradGuard no_grad;
  const auto ctx = tok.encode(context, true);
  const auto whole = tok.encode(context + " " + choice, true);
  auto logp = torch::log_softmax(
      m.forward(
           torch::tensor(whole).slice(0, 0, static_cast<int64_t>(whole.size()) - 1).unsqueeze(0))[0]
          .to(torch::kDouble),
      -1);
  double sum = 0.0;
  for (size_t p = ctx.size() - 1; p + 1 < whole.size(); ++p)
    sum += logp[static_cast<int64_t>(p)][whole[p + 1]].item<double>();
  return sum;
}

std::filesystem::path write(const std::filesystem::path& file, const std::string& text) {
  std::ofstream(file) << text;
  return file;
}

TEST(MultipleChoice, LogLikelihoodsEqualTheHandComputation) {
  auto m = flextron::testing::load_stories260k();
  const auto tok = stories_tokenizer();
  ChoiceExample e;
  e.context = "Once upon a time, there was a little girl named Lily. She";
  e.choices = {"liked to play outside.", "went to the park with her mom.", "xq zz vv.", "café"};
  e.label = 1;
  const auto s = flextron::eval::score_choices(*m, *tok, e, {});
  ASSERT_EQ(s.loglik.size(), 4u);
  std::vector<double> normalized;
  for (size_t i = 0; i < e.choices.size(); ++i) {
    EXPECT_NEAR(s.loglik[i], hand_loglik(*m, *tok, e.context, e.choices[i]), 1e-4) << i;
    normalized.push_back(s.loglik[i] / static_cast<double>(s.chars[i]));
  }
  // Characters as Python's len counts them: "café" is 4, though 5 bytes in UTF-8.
  EXPECT_EQ(s.chars[3], 4);
  EXPECT_EQ(s.chars[0], 22);
  EXPECT_EQ(s.predicted, std::max_element(s.loglik.begin(), s.loglik.end()) - s.loglik.begin());
  EXPECT_EQ(s.predicted_norm,
            std::max_element(normalized.begin(), normalized.end()) - normalized.begin());
  // The gibberish choice is the least likely continuation of a story.
  EXPECT_LT(s.loglik[2], s.loglik[0]);

  // The architecture option is honoured: the narrowest sub-network is a different function.
  flextron::eval::ChoiceOptions narrow;
  narrow.arch =
      flextron::model::narrowest_architecture(flextron::model::default_elastic_space(m->config()));
  const auto sn = flextron::eval::score_choices(*m, *tok, e, narrow);
  EXPECT_GT(std::abs(sn.loglik[0] - s.loglik[0]), 1e-6);
}

TEST(MultipleChoice, AccuracyCountsArgmaxAndArgmaxPerCharacter) {
  auto m = flextron::testing::load_stories260k();
  const auto tok = stories_tokenizer();
  // A short likely choice against a long one: per-token sums favour the short one, per-character
  // normalisation can flip it. Whatever the model says, acc and acc_norm must follow the scores.
  std::vector<ChoiceExample> examples;
  for (int label = 0; label < 2; ++label) {
    ChoiceExample e;
    e.context = "Tom and Sue went to the park. They";
    e.choices = {"played.", "played on the swings and slid down the big slide together."};
    e.label = label;
    examples.push_back(e);
  }
  const auto s = flextron::eval::score_choices(*m, *tok, examples[0], {});
  const auto r = flextron::eval::evaluate_choices(*m, *tok, examples, {});
  EXPECT_EQ(r.examples, 2);
  EXPECT_DOUBLE_EQ(r.acc, 0.5);  // one label is the argmax, the other is not
  EXPECT_DOUBLE_EQ(r.acc_norm, 0.5);
  const bool flips = s.predicted != s.predicted_norm;
  const double ll0 = s.loglik[0] / 7.0, ll1 = s.loglik[1] / 59.0;
  EXPECT_EQ(s.predicted_norm, ll1 > ll0 ? 1 : 0);
  EXPECT_EQ(flips, (s.loglik[1] > s.loglik[0]) != (ll1 > ll0));
  EXPECT_NEAR(r.acc_stderr, 0.5, 1e-9);  // sqrt(p (1 - p) / (n - 1)) at p = 0.5, n = 2
}

TEST(MultipleChoice, ReadsOurHellaSwagAndArcLayouts) {
  const auto dir = scratch_dir();
  const auto file = write(dir / "mixed.jsonl",
                          "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 1}\n"
                          "\n"
                          "{\"ctx\": \"d\", \"endings\": [\"e\", \"f\", \"g\"], \"label\": \"2\"}\n"
                          "{\"question\": \"Why?\", \"choices\": {\"text\": [\"x\", \"y\"], "
                          "\"label\": [\"A\", \"B\"]}, "
                          "\"answerKey\": \"B\"}\n");
  const auto ex = flextron::eval::load_choice_task(file);
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[1].choices.size(), 3u);
  EXPECT_EQ(ex[1].label, 2);
  EXPECT_EQ(ex[1].line, 3);
  EXPECT_EQ(ex[2].context, "Question: Why?\nAnswer:");
  EXPECT_EQ(ex[2].label, 1);
}

TEST(MultipleChoice, BadTaskFilesNameTheLineAndField) {
  const auto dir = scratch_dir();
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    const auto file = write(dir / "bad.jsonl", text);
    try {
      flextron::eval::load_choice_task(file);
      ADD_FAILURE() << "no error for: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const std::string good = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n";
  expect_error(good + "{\"context\": \"a\", \"label\": 0}\n",
               "bad.jsonl:2: missing field \"choices\"");
  expect_error(good + good + "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 3}\n",
               "bad.jsonl:3: label 3 out of range for 1 choices");
  expect_error("{\"ctx\": \"a\", \"endings\": [\"b\"], \"label\": -1}\n",
               ":1: label -1 out of range");
  expect_error("{\"context\": \"a\", \"choices\": [\"b\"], \"label\": \"x\"}\n",
               ":1: field \"label\" must be an integer");
  expect_error(
      "{\"question\": \"q\", \"choices\": {\"text\": [\"b\"], \"label\": [\"A\"]}, "
      "\"answerKey\": \"C\"}\n",
      "answerKey \"C\" is not one of choices.label");
  expect_error("{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 0\n", ":1: invalid JSON");
  expect_error("\n\n", "no examples");
}

TEST(ContinuationTask, MakesDistinctChoicesWithTheTrueContinuationAtTheLabel) {
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "w" + std::to_string(i) + " ";
  flextron::eval::ContinuationTaskOptions o;
  o.examples = 20;
  o.context_words = 5;
  o.continuation_words = 3;
  const auto ex = flextron::eval::make_continuation_task(text, o, "text");
  ASSERT_EQ(ex.size(), 20u);
  for (const auto& e : ex) {
    ASSERT_EQ(e.choices.size(), 4u);
    // Words are numbered: the true continuation starts one after the context's last word.
    const auto last = std::stoi(e.context.substr(e.context.rfind('w') + 1));
    EXPECT_EQ(e.choices[static_cast<size_t>(e.label)].substr(0, e.choices[e.label].find(' ')),
              "w" + std::to_string(last + 1));
    std::set<std::string> distinct(e.choices.begin(), e.choices.end());
    EXPECT_EQ(distinct.size(), 4u);
  }
  EXPECT_EQ(
      flextron::eval::choice_task_to_jsonl(ex),
      flextron::eval::choice_task_to_jsonl(flextron::eval::make_continuation_task(text, o, "t")));
  EXPECT_THROW(flextron::eval::make_continuation_task("too short", o, "text"), Error);
}

}  // namespace
