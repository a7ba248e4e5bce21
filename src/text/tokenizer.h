// One interface for every tokenizer the toolkit speaks: llama2.c's tokenizer.bin (the stories
// models), SentencePiece's tokenizer.model (Llama-2), GPT-2's vocab.json + merges.txt,
// HuggingFace tokenizer.json and GGUF vocabularies (the last three on one BPE engine, text/bpe.h;
// docs/tokenizers.md).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace flextron::text {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; with add_bos the BOS id is prepended.
  virtual std::vector<int64_t> encode(const std::string& text, bool add_bos) const = 0;

  // The bytes that `token` adds to the output when it follows `prev`, for streaming: byte
  // pieces "<0xXX>" become the raw byte, and a piece right after BOS loses its leading space.
  virtual std::string decode_piece(int64_t prev, int64_t token) const = 0;

  // Concatenation of decode_piece over ids (ids[0]'s predecessor is taken to be BOS).
  std::string decode(const std::vector<int64_t>& ids) const;

  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;

  // The vocabulary as stored (SentencePiece's "▁" for spaces) and its merge scores: what a
  // tokenizer export to another format needs.
  virtual std::string piece(int64_t id) const = 0;
  virtual float score(int64_t id) const = 0;

  // A BPE tokenizer's merges ("a b", by rank); empty for score-based vocabularies.
  virtual std::vector<std::string> merges() const { return {}; }

  // The file name this tokenizer is saved under inside a model directory.
  virtual std::string file_name() const = 0;
  // Writes this tokenizer's own file format to `path`.
  virtual void save(const std::filesystem::path& path) const = 0;

  // A short name of the format, for `flextron info` ("sentencepiece", "hf-bpe (tokenizer.json)",
  // "gpt2-bpe", "llama2c", "gguf-llama", "gguf-gpt2/<pre>").
  virtual std::string kind() const { return file_name(); }
  // Every id that ends generation (generation_config.json's eos_token_id may list several).
  virtual std::vector<int64_t> eos_ids() const { return {eos_id()}; }
  // tokenizer_config.json's chat_template (Jinja source), or "" when there is none.
  virtual std::string chat_template() const { return {}; }
  // Whether the vocabulary is byte-level BPE (GPT-2 style: GGUF "gpt2"), and for such a one
  // llama.cpp's tokenizer.ggml.pre name when known ("" otherwise).
  virtual bool byte_level() const { return !merges().empty(); }
  virtual std::string gguf_pre() const { return {}; }
  // Control tokens (BOS, EOS, special added tokens), which decode to nothing.
  virtual bool is_special(int64_t id) const { return id == bos_id() || id == eos_id(); }
};

// llama2.c tokenizer.bin: int32 max_token_length, then per token float score, int32 length,
// bytes. vocab_size comes from the model (the file does not store it).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path,
                                                  int64_t vocab_size);

// Writes any tokenizer in llama2.c's tokenizer.bin format (SentencePiece "▁" becomes ' ').
void save_llama2c_tokenizer(const Tokenizer& tokenizer, const std::filesystem::path& path);

// SentencePiece model (tokenizer.model) through the sentencepiece library.
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& path);

// GPT-2's byte-level BPE from HF's vocab.json + merges.txt (src/text/gpt2_tokenizer.cpp). BOS and
// EOS are both <|endoftext|>; encode(add_bos) prepends it. save() writes vocab.json and, beside
// it, merges.txt. Throws flextron::Error naming the file and line for malformed input.
std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::filesystem::path& vocab_json,
                                               const std::filesystem::path& merges_txt);

// HuggingFace tokenizer.json (BPE models; src/text/hf_tokenizer_json.cpp), with the
// tokenizer_config.json and generation_config.json beside it when present. Throws
// flextron::Error naming the file and the component it cannot honour.
std::unique_ptr<Tokenizer> load_hf_tokenizer(const std::filesystem::path& tokenizer_json);

// The tokenizer of a model directory: tokenizer.model (SentencePiece) if present, else
// tokenizer.json (HF), else vocab.json + merges.txt (GPT-2 BPE), else tokenizer.bin (llama2.c).
// Throws flextron::Error if none exists.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir,
                                          int64_t vocab_size);
// Whether `model_dir` has the files of any tokenizer load_tokenizer reads.
bool has_tokenizer_files(const std::filesystem::path& model_dir);

}  // namespace flextron::text
