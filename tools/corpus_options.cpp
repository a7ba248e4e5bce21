#include "corpus_options.h"

#include "number_options.h"

namespace flextron::cli {

void add_corpus_sampling_options(CLI::App* cmd, pipeline::SampleCorpusOptions& o,
                                 std::vector<std::string>& prompts, const std::string& prefix) {
  const std::string group = prefix.empty() ? "Options" : "Self-distillation corpus";
  cmd->add_option("--" + prefix + "temperature", o.temperature,
                  "Sampling temperature (1: the model's own distribution)")
      ->check(positive())
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--" + prefix + "top-p", o.top_p, "Nucleus sampling mass (1: all of it)")
      ->check(unit_fraction())
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--" + prefix + "prompts", prompts,
                  "Text files of prompts, one per line, cycled over documents (default: from BOS)")
      ->expected(1, -1)
      ->group(group);
  cmd->add_option("--" + prefix + "max-length", o.max_length,
                  "Tokens per document, prompt included (0: the context, at most 512)")
      ->check(non_negative())
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--" + prefix + "batch", o.batch, "Documents decoded together")
      ->check(in_range(1, 64))
      ->capture_default_str()
      ->group(group);
}

}  // namespace flextron::cli
