// Training a SentencePiece BPE tokenizer (byte fallback, Llama-style special ids) through the
// sentencepiece library.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace flextron::text {

struct TokenizerTrainOptions {
  int64_t vocab_size = 4096;
  int threads = 2;
  int64_t max_sentences = 2'000'000;  // lines sampled from the input for training
};

// Trains on `files` and writes `<out_dir>/tokenizer.model` (atomically). Returns its path.
// Throws flextron::Error naming the problem (missing input, vocabulary too small or too large
// for the text).
std::filesystem::path train_sentencepiece(const std::vector<std::filesystem::path>& files,
                                          const std::filesystem::path& out_dir,
                                          const TokenizerTrainOptions& options);

}  // namespace flextron::text
