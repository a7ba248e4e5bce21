// A model's own text as a training corpus (FLEXTRON.md section 3 needs data from the base's
// distribution; a downloaded model comes without its corpus). The base samples documents on the
// fast runtime, from BOS or from prompts, until a token budget is reached; elastic training then
// distills from the frozen base on them (KL over the whole next-token distribution), so the
// sub-networks learn the base's behaviour rather than that of some other text.
//
// Reproducible and resumable: document d is sampled with its own generator seeded by (seed, d),
// in fixed groups of `batch` documents decoded together, and `out` grows by whole groups; the
// progress file beside it (out + ".progress.json") records the settings, the documents and the
// bytes written. A killed run resumes by cutting `out` back to the recorded length and sampling
// the next group, so the file equals an uninterrupted run's byte for byte.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace flextron::pipeline {

struct SampleCorpusOptions {
  std::filesystem::path model;
  std::filesystem::path out;  // UTF-8 text, documents separated by a blank line
  int64_t tokens = 0;         // sampled tokens to write (prompts not counted); the last group
                              // finishes its documents, so the total may pass this by a little
  double temperature = 1.0;   // 1 and top_p 1: the model's own distribution
  double top_p = 1.0;
  uint64_t seed = 1234;
  std::vector<std::filesystem::path> prompts;  // text files, a prompt per non-empty line; document
                                               // d starts from prompt d mod count (none: BOS)
  int64_t max_length = 0;  // tokens per document, prompt included; 0: min(context, 512)
  int64_t batch = 16;      // documents decoded together
  int threads = 0;         // 0: LibTorch's intra-op thread count
  int64_t stop_after_groups = 0;  // testing aid: return after this many groups, as if killed
};

struct SampleCorpusResult {
  int64_t tokens = 0;     // sampled tokens in `out` (all of them, after a resume too)
  int64_t documents = 0;
  int64_t bytes = 0;
  double seconds = 0.0;  // this run's
  double tokens_per_second = 0.0;
  bool resumed = false;
  bool completed = false;
  // What made the corpus (model, seed, temperature, top-p, prompts, lengths): for a record.
  nlohmann::json provenance;
};

// The progress file of a corpus: out + ".progress.json".
std::filesystem::path corpus_progress_file(const std::filesystem::path& out);

// Samples (or resumes, or finds finished) the corpus; progress on stderr. Throws
// flextron::Error for bad options, a model the fast runtime cannot run, unreadable prompts.
SampleCorpusResult sample_corpus(const SampleCorpusOptions& options);

}  // namespace flextron::pipeline
