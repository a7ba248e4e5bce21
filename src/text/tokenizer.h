// One interface for every tokenizer the toolkit speaks: llama2.c's tokenizer.bin (the stories
// models) and SentencePiece's tokenizer.model (Llama-2), later GPT-2 byte-level BPE.
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

// The tokenizer of a model directory: tokenizer.model (SentencePiece) if present, else
// vocab.json + merges.txt (GPT-2 BPE), else tokenizer.bin (llama2.c). Throws flextron::Error if
// none exists.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir,
                                          int64_t vocab_size);
// Whether `model_dir` has the files of any tokenizer load_tokenizer reads.
bool has_tokenizer_files(const std::filesystem::path& model_dir);

}  // namespace flextron::text
