// flextron make-task: a next-words multiple-choice task (JSONL) from any held-out text, for
// `flextron eval --tasks` (see eval/continuation_task.h).
#include <cstdio>

#include "commands.h"
#include "eval/continuation_task.h"
#include "io/atomic_file.h"
#include "number_options.h"
#include "text/utf8.h"

namespace flextron::cli {

void register_make_task(CLI::App& app) {
  auto o = std::make_shared<eval::ContinuationTaskOptions>();
  auto data = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand(
      "make-task", "Make a multiple-choice 'which words come next' task (JSONL) from a text file");
  cmd->add_option("--data", *data, "Held-out UTF-8 text")->required();
  cmd->add_option("--out", *out, "Output JSONL file")->required();
  cmd->add_option("--examples", o->examples, "Examples")->check(positive())->capture_default_str();
  cmd->add_option("--choices", o->choices, "Choices per example")
      ->check(in_range(2, 100))
      ->capture_default_str();
  cmd->add_option("--context-words", o->context_words, "Words of context")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--continuation-words", o->continuation_words, "Words per choice")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  cmd->callback([=] {
    const auto examples = eval::make_continuation_task(text::read_utf8_file(*data), *o, *data);
    io::write_text_atomically(*out, eval::choice_task_to_jsonl(examples));
    std::printf("wrote %zu examples of %lld choices to %s\n", examples.size(),
                static_cast<long long>(o->choices), out->c_str());
  });
}

}  // namespace flextron::cli
