#include "train/token_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "text/utf8.h"

namespace flextron::train {

namespace fs = std::filesystem;

namespace {

constexpr int kCacheVersion = 1;

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t fnv1a(const std::string& bytes, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

void check_source(const fs::path& path) {
  if (!fs::exists(path)) fail(path.string(), "no such file");
  if (fs::is_directory(path)) fail(path.string(), "is a directory, expected a text file");
  if (fs::file_size(path) == 0) fail(path.string(), "empty file");
}

// Paragraph-sized pieces (cut after a blank line) so that tokenizers with super-linear encoders
// stay fast and memory stays bounded on large files.
std::vector<std::string_view> chunks(std::string_view text, size_t target = 1 << 16) {
  std::vector<std::string_view> out;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = std::min(text.size(), begin + target);
    if (end < text.size()) {
      const size_t cut = text.find("\n\n", end);
      end = cut == std::string_view::npos ? text.size() : cut + 2;
    }
    out.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  return out;
}

std::shared_ptr<void> map_file(const fs::path& path, size_t bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path.string(), "cannot open token cache");
  void* addr = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) fail(path.string(), "cannot memory-map token cache");
  return std::shared_ptr<void>(addr, [bytes](void* p) { ::munmap(p, bytes); });
}

}  // namespace

std::string file_fingerprint(const fs::path& path) {
  return hex64(fnv1a(io::read_file(path)));
}

TokenDataset TokenDataset::build(const std::vector<fs::path>& files,
                                 const text::Tokenizer& tokenizer, const fs::path& tokenizer_file,
                                 const fs::path& cache_dir, bool verbose) {
  if (files.empty()) fail("--data", "no data files given");
  nlohmann::json manifest;
  manifest["version"] = kCacheVersion;
  manifest["tokenizer"] = {{"file", tokenizer_file.filename().string()},
                           {"hash", file_fingerprint(tokenizer_file)}};
  uint64_t key = fnv1a(manifest["tokenizer"]["hash"].get<std::string>());
  for (const auto& f : files) {
    check_source(f);
    const auto hash = file_fingerprint(f);
    manifest["sources"].push_back(
        {{"path", fs::absolute(f).string()}, {"bytes", fs::file_size(f)}, {"hash", hash}});
    key = fnv1a(hash, key);
  }
  fs::create_directories(cache_dir);
  const auto stem = cache_dir / ("tokens-" + hex64(key));
  const auto tokens_path = fs::path(stem.string() + ".bin");
  const auto manifest_path = fs::path(stem.string() + ".json");

  bool cached = false;
  if (fs::exists(manifest_path) && fs::exists(tokens_path)) {
    try {
      auto old = nlohmann::json::parse(io::read_file(manifest_path));
      cached = old["sources"] == manifest["sources"] && old["tokenizer"] == manifest["tokenizer"] &&
               old["version"] == kCacheVersion &&
               old["tokens"].get<int64_t>() * 4 == static_cast<int64_t>(fs::file_size(tokens_path));
      if (cached) manifest = old;
    } catch (const nlohmann::json::exception&) {
      cached = false;  // a damaged manifest is rebuilt
    }
  }
  if (!cached) {
    int64_t total = 0, total_bytes = 0;
    io::write_file_atomically(tokens_path, [&](std::ostream& out) {
      for (const auto& f : files) {
        const std::string text = io::read_file(f);
        text::check_utf8(text, f.string());
        std::vector<int32_t> ids{static_cast<int32_t>(tokenizer.bos_id())};
        for (auto piece : chunks(text)) {
          for (auto id : tokenizer.encode(std::string(piece), /*add_bos=*/false))
            ids.push_back(static_cast<int32_t>(id));
        }
        out.write(reinterpret_cast<const char*>(ids.data()),
                  static_cast<std::streamsize>(ids.size() * 4));
        total += static_cast<int64_t>(ids.size());
        total_bytes += static_cast<int64_t>(text.size());
        if (verbose)
          std::fprintf(stderr, "tokenized %s: %.2f MB -> %lld tokens\n", f.string().c_str(),
                       text.size() / 1e6, static_cast<long long>(ids.size()));
      }
    });
    manifest["tokens"] = total;
    manifest["bytes"] = total_bytes;
    io::write_text_atomically(manifest_path, manifest.dump(2) + "\n");
  }
  TokenDataset d;
  d.manifest_ = manifest;
  d.size_ = manifest["tokens"].get<int64_t>();
  if (d.size_ < 2) fail(files.front().string(), "too little text: fewer than 2 tokens");
  d.mapping_ = map_file(tokens_path, static_cast<size_t>(d.size_) * 4);
  d.data_ = static_cast<const int32_t*>(d.mapping_.get());
  return d;
}

torch::Tensor TokenDataset::slice(int64_t begin, int64_t length) const {
  auto t = torch::empty({length}, torch::kLong);
  auto* p = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < length; ++i) p[i] = data_[begin + i];
  return t;
}

double TokenDataset::bytes_per_token() const {
  return static_cast<double>(manifest_["bytes"].get<int64_t>()) / static_cast<double>(size_);
}

Split split_blocks(int64_t n, int64_t block_size, double val_fraction, uint64_t seed) {
  Split split;
  const int64_t blocks = (n + block_size - 1) / block_size;
  std::vector<int64_t> order(blocks);
  for (int64_t b = 0; b < blocks; ++b) order[b] = b;
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  int64_t n_val =
      blocks > 1 ? std::max<int64_t>(1, static_cast<int64_t>(val_fraction * blocks)) : 0;
  if (val_fraction <= 0) n_val = 0;
  std::vector<bool> is_val(blocks, false);
  for (int64_t i = 0; i < n_val; ++i) is_val[order[i]] = true;
  for (int64_t b = 0; b < blocks; ++b) {
    auto range = std::make_pair(b * block_size, std::min(n, (b + 1) * block_size));
    (is_val[b] ? split.validation : split.train).push_back(range);
  }
  return split;
}

Batch sample_batch(const TokenDataset& data, const Ranges& ranges, int64_t batch, int64_t seq_len,
                   uint64_t seed, int64_t step) {
  // Ranges long enough to hold one window, each drawn with probability proportional to the
  // number of windows it holds.
  std::vector<int64_t> usable, cumulative;
  int64_t total = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const int64_t starts = ranges[i].second - ranges[i].first - seq_len;  // windows of seq_len+1
    if (starts <= 0) continue;
    usable.push_back(static_cast<int64_t>(i));
    total += starts;
    cumulative.push_back(total);
  }
  if (total == 0)
    fail("data", "no training range holds a window of " + std::to_string(seq_len + 1) + " tokens");
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step));
  std::uniform_int_distribution<int64_t> pick(0, total - 1);
  auto inputs = torch::empty({batch, seq_len}, torch::kLong);
  auto targets = torch::empty({batch, seq_len}, torch::kLong);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t r = pick(rng);
    const size_t k = std::upper_bound(cumulative.begin(), cumulative.end(), r) - cumulative.begin();
    const int64_t before = k == 0 ? 0 : cumulative[k - 1];
    const int64_t start = ranges[usable[k]].first + (r - before);
    auto window = data.slice(start, seq_len + 1);
    inputs[b].copy_(window.narrow(0, 0, seq_len));
    targets[b].copy_(window.narrow(0, 1, seq_len));
  }
  return {inputs, targets};
}

std::vector<int64_t> validation_windows(const Ranges& ranges, int64_t seq_len,
                                        int64_t max_windows) {
  std::vector<int64_t> starts;
  for (const auto& [begin, end] : ranges) {
    for (int64_t s = begin; s + seq_len + 1 <= end; s += seq_len) {
      if (static_cast<int64_t>(starts.size()) >= max_windows) return starts;
      starts.push_back(s);
    }
  }
  return starts;
}

}  // namespace flextron::train
