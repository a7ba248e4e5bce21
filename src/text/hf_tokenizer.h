// HuggingFace `tokenizers` pipelines (tokenizer.json) over the one BPE engine (text/bpe.h):
// added tokens -> normalizers -> pre-tokenizers -> BPE -> post-processor, and decoders for
// decode_piece. The vocab.json + merges.txt loader and GGUF vocabularies build their tokenizers
// as such a pipeline too. docs/tokenizers.md lists what is supported and what is refused.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"

namespace flextron::text {

class BpeModel;

// What a pipeline is built from.
struct HfSource {
  nlohmann::json tokenizer;   // tokenizer.json
  nlohmann::json config;      // tokenizer_config.json, or null
  nlohmann::json generation;  // generation_config.json, or null
  std::string where;          // names tokenizer.json in errors
  std::string kind;           // what kind() reports
  // Kept to save the files verbatim; empty text = write `tokenizer` / `config` as JSON.
  std::string tokenizer_text, config_text, generation_text;
  // Non-empty: merge by the score of the merged piece (SentencePiece / llama.cpp `llama`),
  // mergeable[id] saying which pieces may be formed; model.merges is then ignored on loading
  // and derived from the scores when saved.
  std::vector<float> scores;
  std::vector<bool> mergeable;
};

class HfTokenizer : public Tokenizer {
 public:
  explicit HfTokenizer(HfSource source);
  ~HfTokenizer() override;

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override;
  std::string decode_piece(int64_t prev, int64_t token) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return bos_; }
  int64_t eos_id() const override { return eos_; }
  std::vector<int64_t> eos_ids() const override;
  std::string piece(int64_t id) const override;
  float score(int64_t id) const override;
  std::vector<std::string> merges() const override;
  std::string file_name() const override { return "tokenizer.json"; }
  // Writes tokenizer.json at `path` and, beside it, tokenizer_config.json and
  // generation_config.json when there were any.
  void save(const std::filesystem::path& path) const override;
  std::string kind() const override { return kind_; }
  std::string chat_template() const override { return chat_template_; }
  bool byte_level() const override { return byte_level_; }
  std::string gguf_pre() const override { return gguf_pre_; }
  bool is_special(int64_t id) const override;

  // tokenizer.json as it would be saved (model.merges filled in for a score-merged vocabulary).
  nlohmann::json tokenizer_json() const;

 protected:
  std::string detect_gguf_pre() const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> pieces_;  // every id: model vocabulary and added tokens
  int64_t bos_ = -1, eos_ = -1;
  std::vector<int64_t> eos_ids_;
  std::string kind_, chat_template_, gguf_pre_;
  bool byte_level_ = false;
  HfSource source_;
};

// llama.cpp's pre-tokenizer regexes for tokenizer.ggml.pre (applied in order, each splitting
// the pieces the previous left, matches and gaps alike); throws flextron::Error naming an
// unknown `pre`.
std::vector<std::string> llama_cpp_pre_regexes(const std::string& pre, const std::string& where);

}  // namespace flextron::text
