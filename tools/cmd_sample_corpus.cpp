// flextron sample-corpus: the model's own text as a training corpus (pipeline/sample_corpus.h).
#include <cstdio>

#include "commands.h"
#include "corpus_options.h"
#include "number_options.h"

namespace flextron::cli {

void register_sample_corpus(CLI::App& app) {
  auto o = std::make_shared<pipeline::SampleCorpusOptions>();
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto prompts = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand(
      "sample-corpus",
      "Sample a corpus of the model's own text (seeded; rerun to resume): training data for "
      "convert when the original corpus is not at hand");
  cmd->add_option("--model", *model, "Model directory")->required();
  cmd->add_option("--tokens", o->tokens, "Sampled tokens to write")->required()->check(positive());
  cmd->add_option("--out", *out, "Output text file (documents separated by a blank line)")
      ->required();
  cmd->add_option("--seed", o->seed, "Seed")->capture_default_str();
  add_corpus_sampling_options(cmd, *o, *prompts, "");
  cmd->add_option("--threads", o->threads, "CPU threads (0 = LibTorch default)")
      ->check(non_negative());
  cmd->add_option("--stop-after-groups", o->stop_after_groups,
                  "Return after N groups as if killed (for testing resume)")
      ->check(positive())
      ->group("");
  cmd->callback([=] {
    o->model = *model;
    o->out = *out;
    o->prompts.assign(prompts->begin(), prompts->end());
    const auto r = pipeline::sample_corpus(*o);
    std::printf("%s: %lld tokens in %lld documents (%lld bytes)%s; %.0f tokens/s this run\n",
                o->out.c_str(), static_cast<long long>(r.tokens),
                static_cast<long long>(r.documents), static_cast<long long>(r.bytes),
                r.completed ? "" : ", stopped early (rerun to resume)", r.tokens_per_second);
  });
}

}  // namespace flextron::cli
