#include "pipeline/sample_corpus.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/progress_line.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "runtime/fast_decoder.h"
#include "runtime/fast_generate.h"
#include "runtime/sampler.h"
#include "text/utf8.h"
#include "train/progress.h"
#include "train/token_dataset.h"

namespace flextron::pipeline {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "flextron-sample-corpus";
constexpr const char* kSeparator = "\n\n";

// SplitMix64: document d's generator seed from the run's seed, so documents are independent of
// one another and of the group they are decoded in.
uint64_t document_seed(uint64_t seed, int64_t document) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(document + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<std::string> read_prompts(const std::vector<fs::path>& files) {
  std::vector<std::string> prompts;
  for (const auto& file : files) {
    const std::string text = text::read_utf8_file(file);
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
      start = end + 1;
    }
    if (prompts.empty()) fail(file.string(), "has no prompt (one per non-empty line)");
  }
  return prompts;
}

// What decides the corpus's bytes: a resume must match it (the token budget may grow).
nlohmann::json settings_of(const SampleCorpusOptions& o, int64_t max_length) {
  nlohmann::json prompts = nlohmann::json::array();
  for (const auto& p : o.prompts)
    prompts.push_back({{"file", fs::absolute(p).string()}, {"fnv1a", train::file_fingerprint(p)}});
  return {{"model", fs::absolute(o.model).string()},
          {"temperature", o.temperature},
          {"top_p", o.top_p},
          {"seed", o.seed},
          {"prompts", prompts},
          {"max_length", max_length},
          {"batch", o.batch}};
}

struct Document {
  std::vector<int64_t> prompt;  // BOS + prompt tokens
  std::string prompt_text;
  std::vector<int64_t> sampled;
  runtime::Sampler sampler;
  runtime::EngineCache cache;
  bool done = false;
};

}  // namespace

fs::path corpus_progress_file(const fs::path& out) { return out.string() + ".progress.json"; }

SampleCorpusResult sample_corpus(const SampleCorpusOptions& o) {
  if (o.out.empty()) fail("--out", "an output file is required");
  if (o.tokens <= 0) fail("--tokens", "must be a positive number of tokens");
  if (!(std::isfinite(o.temperature) && o.temperature > 0.0))
    fail("--temperature", "must be a positive number (sampling; 1 is the model's distribution)");
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) fail("--top-p", "must be in (0, 1]");
  if (o.batch < 1 || o.batch > 64) fail("--batch", "must be in [1, 64]");
  if (fs::is_directory(o.out)) fail(o.out.string(), "is a directory (--out names a text file)");

  auto loaded = io::load_model_dir(o.model);
  if (!loaded.tokenizer) fail(o.model.string(), "has no tokenizer: sampled ids cannot be text");
  const auto& tokenizer = *loaded.tokenizer;
  const auto& config = loaded.model->config();
  std::string why;
  if (!runtime::fast_runtime_supports(*loaded.model, {}, &why))
    fail(o.model.string(), "cannot be sampled on the fast runtime: " + why);
  const int64_t context = config.max_position_embeddings;
  const int64_t max_length = o.max_length > 0 ? o.max_length : std::min<int64_t>(context, 512);
  if (max_length < 2 || max_length > context)
    fail("--max-length", std::to_string(max_length) + " outside [2, " + std::to_string(context) +
                             "] (the model's context)");
  const auto prompts = read_prompts(o.prompts);
  std::vector<std::vector<int64_t>> prompt_ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    prompt_ids.push_back(tokenizer.encode(prompts[i], /*add_bos=*/true));
    if (static_cast<int64_t>(prompt_ids.back().size()) >= max_length)
      fail("prompt " + std::to_string(i + 1),
           std::to_string(prompt_ids.back().size()) + " tokens leave no room under --max-length " +
               std::to_string(max_length));
  }
  // Generation ends at EOS, and at BOS too: llama2.c's models mark a story's end with BOS.
  std::set<int64_t> stops;
  for (const auto id : tokenizer.eos_ids()) stops.insert(id);
  stops.insert(tokenizer.bos_id());

  SampleCorpusResult result;
  const nlohmann::json settings = settings_of(o, max_length);
  result.provenance = settings;
  result.provenance["format"] = kFormat;
  result.provenance["stop_tokens"] = std::vector<int64_t>(stops.begin(), stops.end());

  // Where an earlier run stopped.
  const fs::path progress_file = corpus_progress_file(o.out);
  nlohmann::json state = {{"format", kFormat},   {"settings", settings}, {"documents", 0},
                          {"tokens", 0},         {"bytes", 0},           {"groups", 0},
                          {"prompt_tokens", 0}};
  if (fs::exists(progress_file) && fs::exists(o.out)) {
    const auto previous = io::read_json_file(progress_file);
    const auto bytes = previous.value("bytes", int64_t{-1});
    if (previous.value("format", "") == kFormat && previous.value("settings", nlohmann::json()) ==
                                                       settings &&
        bytes >= 0 && static_cast<int64_t>(fs::file_size(o.out)) >= bytes) {
      state = previous;
      state.erase("done");
      result.resumed = state.value("groups", int64_t{0}) > 0;
      fs::resize_file(o.out, static_cast<uintmax_t>(bytes));  // drop a partly written group
    } else {
      std::fprintf(stderr, "sample-corpus: %s was made with other settings; starting over\n",
                   o.out.c_str());
    }
  }
  if (!result.resumed) {
    if (!o.out.parent_path().empty()) fs::create_directories(o.out.parent_path());
    std::ofstream(o.out, std::ios::binary | std::ios::trunc);
  }

  runtime::EngineOptions engine_options;
  engine_options.threads = o.threads;
  runtime::FastDecoder engine(*loaded.model, engine_options);
  const int64_t vocab = config.vocab_size;
  int64_t documents = state["documents"].get<int64_t>(), tokens = state["tokens"].get<int64_t>();
  int64_t groups = state["groups"].get<int64_t>(), bytes = state["bytes"].get<int64_t>();
  int64_t prompt_tokens = state["prompt_tokens"].get<int64_t>();
  const int64_t start_tokens = tokens;
  const auto started = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  };
  ProgressLine progress;
  int64_t groups_this_run = 0;
  std::vector<float> logits(static_cast<size_t>(o.batch * vocab));
  while (tokens < o.tokens) {
    if (o.stop_after_groups > 0 && groups_this_run >= o.stop_after_groups) break;
    // One group: prefill every document's prompt, then decode the unfinished ones together.
    std::vector<Document> group;
    group.reserve(static_cast<size_t>(o.batch));
    for (int64_t b = 0; b < o.batch; ++b) {
      const int64_t d = documents + b;
      runtime::SamplingOptions sampling{o.temperature, o.top_p, document_seed(o.seed, d)};
      Document doc{{}, {}, {}, runtime::Sampler(sampling), engine.make_cache(max_length), false};
      if (prompts.empty()) {
        doc.prompt = {tokenizer.bos_id()};
      } else {
        const size_t p = static_cast<size_t>(d) % prompts.size();
        doc.prompt = prompt_ids[p];
        doc.prompt_text = prompts[p];
      }
      const float* last = engine.prefill(doc.prompt, doc.cache);
      const int64_t first = doc.sampler.sample(last, vocab);
      if (stops.count(first) != 0) {
        doc.done = true;
      } else {
        doc.sampled.push_back(first);
      }
      group.push_back(std::move(doc));
    }
    for (;;) {
      std::vector<int64_t> next;
      std::vector<runtime::EngineCache*> caches;
      std::vector<Document*> rows;
      for (auto& doc : group) {
        if (doc.done) continue;
        if (static_cast<int64_t>(doc.prompt.size() + doc.sampled.size()) >= max_length) {
          doc.done = true;
          continue;
        }
        next.push_back(doc.sampled.back());
        caches.push_back(&doc.cache);
        rows.push_back(&doc);
      }
      if (rows.empty()) break;
      const float* out = engine.decode_batch(next, caches);
      for (size_t r = 0; r < rows.size(); ++r) {
        const int64_t id = rows[r]->sampler.sample(out + static_cast<int64_t>(r) * vocab, vocab);
        if (stops.count(id) != 0) {
          rows[r]->done = true;
        } else {
          rows[r]->sampled.push_back(id);
        }
      }
    }
    // Append the group, then record it: a kill between the two leaves bytes the resume cuts off.
    std::string text;
    for (const auto& doc : group) {
      std::string body = doc.prompt_text;
      if (!doc.sampled.empty()) {
        // Decoded after the prompt's last token, so its leading space is kept; from BOS alone,
        // decode() drops it as a text's start does.
        std::string sampled;
        int64_t prev = doc.prompt.back();
        for (const auto id : doc.sampled) {
          sampled += tokenizer.decode_piece(prev, id);
          prev = id;
        }
        body += sampled;
      }
      text += text::valid_utf8(body);
      text += kSeparator;
      tokens += static_cast<int64_t>(doc.sampled.size());
      prompt_tokens += static_cast<int64_t>(doc.prompt.size());
    }
    {
      std::ofstream f(o.out, std::ios::binary | std::ios::app);
      f.write(text.data(), static_cast<std::streamsize>(text.size()));
      f.flush();
      if (!f) fail(o.out.string(), "could not be written");
    }
    bytes += static_cast<int64_t>(text.size());
    documents += o.batch;
    ++groups;
    ++groups_this_run;
    state["documents"] = documents;
    state["tokens"] = tokens;
    state["bytes"] = bytes;
    state["groups"] = groups;
    state["prompt_tokens"] = prompt_tokens;
    io::write_text_atomically(progress_file, state.dump(2) + "\n");
    const double rate = static_cast<double>(tokens - start_tokens) / std::max(seconds(), 1e-9);
    const double eta = rate > 0 ? static_cast<double>(std::max<int64_t>(0, o.tokens - tokens)) / rate
                                : 0.0;
    progress.updatef("sample-corpus: %lld/%lld tokens, %lld documents, %.0f tokens/s, ETA %s",
                     static_cast<long long>(tokens), static_cast<long long>(o.tokens),
                     static_cast<long long>(documents), rate,
                     train::format_duration(eta).c_str());
  }
  progress.finish();
  result.completed = tokens >= o.tokens;
  if (result.completed) {
    state["done"] = true;
    io::write_text_atomically(progress_file, state.dump(2) + "\n");
  }
  result.tokens = tokens;
  result.documents = documents;
  result.bytes = bytes;
  result.seconds = seconds();
  result.tokens_per_second =
      static_cast<double>(tokens - start_tokens) / std::max(result.seconds, 1e-9);
  result.provenance["tokens"] = tokens;
  result.provenance["documents"] = documents;
  result.provenance["prompt_tokens"] = prompt_tokens;
  result.provenance["file"] = fs::absolute(o.out).string();
  return result;
}

}  // namespace flextron::pipeline
