// SentencePiece models (Llama-2's tokenizer.model) through the sentencepiece library, reached
// via the dlopen'ed libflextron_spm bridge (sentencepiece_library.h says why).
#include "core/error.h"
#include "io/atomic_file.h"
#include "text/sentencepiece_library.h"
#include "text/tokenizer.h"

namespace flextron::text {

namespace detail {
// Defined in tokenizer.cpp: the BOS-space and "<0xXX>" rules shared by every format.
std::string decode_piece_text(int64_t prev, int64_t bos, std::string piece);
}  // namespace detail

namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::filesystem::path path)
      : path_(std::move(path)), lib_(sentencepiece_library()) {
    char error[1024] = "";
    model_ = lib_.load(path_.c_str(), error, sizeof(error));
    if (model_ == nullptr) fail(path_.string(), error[0] != '\0' ? error : "cannot load model");
  }

  ~SentencePieceTokenizer() override { lib_.free(model_); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override {
    // Llama's pieces average a few bytes, so text.size() + 1 ids nearly always suffice;
    // the bridge reports the real count when they do not, and the call is repeated.
    std::vector<int> ids(text.size() + 1);
    long n = lib_.encode(model_, text.data(), text.size(), ids.data(), ids.size());
    if (n > static_cast<long>(ids.size())) {
      ids.resize(static_cast<size_t>(n));
      n = lib_.encode(model_, text.data(), text.size(), ids.data(), ids.size());
    }
    if (n < 0 || n > static_cast<long>(ids.size())) fail(path_.string(), "encoding failed");
    std::vector<int64_t> tokens;
    tokens.reserve(static_cast<size_t>(n) + 1);
    if (add_bos) {
      if (bos_id() < 0) fail(path_.string(), "the model defines no BOS token");
      tokens.push_back(bos_id());
    }
    tokens.insert(tokens.end(), ids.begin(), ids.begin() + n);
    return tokens;
  }

  std::string decode_piece(int64_t prev, int64_t token) const override {
    const int id = checked(token);
    // Control pieces (<s>, </s>) print nothing, as in SentencePiece's own decoder.
    if (lib_.is_control(model_, id)) return "";
    static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space
    std::string text = piece(id);
    for (size_t at = text.find(kSpace); at != std::string::npos; at = text.find(kSpace, at + 1))
      text.replace(at, kSpace.size(), " ");
    return detail::decode_piece_text(prev, bos_id(), std::move(text));
  }

  int64_t vocab_size() const override { return lib_.piece_size(model_); }
  int64_t bos_id() const override { return lib_.bos_id(model_); }
  int64_t eos_id() const override { return lib_.eos_id(model_); }

  std::string piece(int64_t id) const override {
    size_t length = 0;
    const char* data = lib_.id_to_piece(model_, checked(id), &length);
    return std::string(data, length);
  }

  float score(int64_t id) const override { return lib_.score(model_, checked(id)); }
  std::string file_name() const override { return "tokenizer.model"; }
  std::string kind() const override { return "sentencepiece"; }

  void save(const std::filesystem::path& path) const override {
    size_t length = 0;
    const char* data = lib_.serialized(model_, &length);
    io::write_text_atomically(path, std::string(data, length));
  }

 private:
  int checked(int64_t id) const {
    if (id < 0 || id >= vocab_size()) {
      fail(path_.string(), "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(vocab_size()) + ")");
    }
    return static_cast<int>(id);
  }

  std::filesystem::path path_;
  const SentencePieceLibrary& lib_;
  fx_spm* model_ = nullptr;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace flextron::text
