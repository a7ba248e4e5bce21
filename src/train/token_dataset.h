// Text files tokenized once and cached as a memory-mapped binary token file (int32) beside a
// small JSON manifest (source files with sizes and hashes, tokenizer hash, token count), plus a
// deterministic train/validation split by contiguous blocks and a seeded batch sampler.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "text/tokenizer.h"

namespace flextron::train {

// FNV-1a 64-bit of a file's bytes, as 16 hex digits: a cheap fingerprint for cache keys.
std::string file_fingerprint(const std::filesystem::path& path);

class TokenDataset {
 public:
  // Tokenizes `files` (UTF-8 text; BOS before each file) with `tokenizer`, or reuses the cache in
  // `cache_dir` when the manifest matches (same files, sizes, hashes and tokenizer). Throws
  // flextron::Error for a missing file, a directory, an empty file, or invalid UTF-8 (with the
  // byte offset).
  static TokenDataset build(const std::vector<std::filesystem::path>& files,
                            const text::Tokenizer& tokenizer,
                            const std::filesystem::path& tokenizer_file,
                            const std::filesystem::path& cache_dir, bool verbose = true);

  int64_t size() const { return size_; }
  const int32_t* data() const { return data_; }
  // Tokens [begin, begin + length) as an int64 tensor.
  torch::Tensor slice(int64_t begin, int64_t length) const;
  const nlohmann::json& manifest() const { return manifest_; }
  // UTF-8 bytes of the source text per token (for bits per byte).
  double bytes_per_token() const;

 private:
  std::shared_ptr<void> mapping_;
  const int32_t* data_ = nullptr;
  int64_t size_ = 0;
  nlohmann::json manifest_;
};

// [begin, end) token ranges.
using Ranges = std::vector<std::pair<int64_t, int64_t>>;

struct Split {
  Ranges train;
  Ranges validation;
};

// Cuts [0, n) into blocks of block_size tokens and sends a seeded random val_fraction of them
// (at least one, unless there is only one block) to validation.
Split split_blocks(int64_t n, int64_t block_size, double val_fraction, uint64_t seed);

// Windows of seq_len + 1 tokens: x = first seq_len, y = last seq_len.
struct Batch {
  torch::Tensor inputs;   // [B, T] int64
  torch::Tensor targets;  // [B, T] int64
};

// The batch of training step `step`: a function of (seed, step) only, so a resumed run sees the
// same data order as an uninterrupted one.
Batch sample_batch(const TokenDataset& data, const Ranges& ranges, int64_t batch, int64_t seq_len,
                   uint64_t seed, int64_t step);

// Fixed validation windows: consecutive non-overlapping windows of each range, up to max_windows.
std::vector<int64_t> validation_windows(const Ranges& ranges, int64_t seq_len, int64_t max_windows);

}  // namespace flextron::train
