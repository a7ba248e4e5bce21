#include "text/tokenizer.h"

#include <cctype>

#include "core/error.h"

namespace flextron::text {

namespace detail {

// Shared by both tokenizer formats (declared where used): llama2.c's decode() rules.
std::string decode_piece_text(int64_t prev, int64_t bos, std::string piece) {
  // SentencePiece's decoder drops the dummy-prefix space of the first piece after BOS.
  if (prev == bos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
  // Byte-fallback pieces "<0xXX>" stand for one raw byte (usually part of a UTF-8 sequence).
  if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>' &&
      std::isxdigit(static_cast<unsigned char>(piece[3])) &&
      std::isxdigit(static_cast<unsigned char>(piece[4]))) {
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  return piece;
}

}  // namespace detail

namespace {
// A model may pad its embedding past the tokenizer's vocabulary, never the reverse.
void check_fits(const Tokenizer& tokenizer, int64_t vocab_size, const std::filesystem::path& file) {
  if (vocab_size > 0 && tokenizer.vocab_size() > vocab_size)
    fail(file.string(), "tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                            " pieces but the model's vocab_size is " + std::to_string(vocab_size));
}
}  // namespace

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  int64_t prev = bos_id();
  for (int64_t id : ids) {
    text += decode_piece(prev, id);
    prev = id;
  }
  return text;
}

bool has_tokenizer_files(const std::filesystem::path& model_dir) {
  auto file = [&](const char* name) {
    return std::filesystem::is_regular_file(model_dir / name);
  };
  return file("tokenizer.model") || file("tokenizer.json") || file("tokenizer.bin") ||
         (file("vocab.json") && file("merges.txt"));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir,
                                          int64_t vocab_size) {
  const auto spm = model_dir / "tokenizer.model";
  if (std::filesystem::is_regular_file(spm)) {
    auto tokenizer = load_sentencepiece_tokenizer(spm);
    check_fits(*tokenizer, vocab_size, spm);
    return tokenizer;
  }
  const auto hf = model_dir / "tokenizer.json";
  if (std::filesystem::is_regular_file(hf)) {
    auto tokenizer = load_hf_tokenizer(hf);
    check_fits(*tokenizer, vocab_size, hf);
    return tokenizer;
  }
  const auto vocab = model_dir / "vocab.json", merges = model_dir / "merges.txt";
  if (std::filesystem::is_regular_file(vocab) && std::filesystem::is_regular_file(merges)) {
    auto tokenizer = load_gpt2_tokenizer(vocab, merges);
    check_fits(*tokenizer, vocab_size, vocab);
    return tokenizer;
  }
  const auto bin = model_dir / "tokenizer.bin";
  if (std::filesystem::is_regular_file(bin)) return load_llama2c_tokenizer(bin, vocab_size);
  fail(model_dir.string(),
       "no tokenizer found (expected tokenizer.model, tokenizer.json, vocab.json + merges.txt, "
       "or tokenizer.bin)");
}

}  // namespace flextron::text
