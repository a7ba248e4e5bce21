// The sampling options of a self-generated corpus (pipeline/sample_corpus.h), one declaration
// for `flextron sample-corpus` (--temperature, ...) and `flextron convert --self-distill`
// (the same options prefixed: --sample-temperature, ...).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "pipeline/sample_corpus.h"

namespace flextron::cli {

// Declares --<prefix>temperature, --<prefix>top-p, --<prefix>prompts, --<prefix>max-length and
// --<prefix>batch on `cmd`, writing into `o`; `prompts` receives the prompt files' names (copy
// them into o.prompts in the callback).
void add_corpus_sampling_options(CLI::App* cmd, pipeline::SampleCorpusOptions& o,
                                 std::vector<std::string>& prompts, const std::string& prefix);

}  // namespace flextron::cli
