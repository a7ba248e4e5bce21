// SentencePiece models (Llama-2's tokenizer.model) through the sentencepiece library.
//
// Why dlopen: Debian's libsentencepiece.so.0 carries its own protobuf-lite 3.14 and exports
// its google::protobuf symbols, while libtorch links the system libprotobuf 3.21. Linked
// normally, one of the two binds to the other's protobuf: the process either segfaults in
// libprotobuf's static initialisers (sentencepiece first in symbol order) or aborts on
// protobuf's version check (libprotobuf first). Loaded with RTLD_LOCAL | RTLD_DEEPBIND, the
// library keeps its protobuf to itself. So this file never references a sentencepiece symbol at
// link time: it resolves the few members it calls with dlsym and calls them through member
// function pointers, letting the compiler apply the C++ ABI (this, hidden return slot).
#include <dlfcn.h>

#include <sentencepiece_processor.h>

#include <cstddef>
#include <cstring>
#include <mutex>
#include <string_view>

#include "core/error.h"
#include "io/atomic_file.h"
#include "text/tokenizer.h"

namespace flextron::text {

namespace detail {
// Defined in tokenizer.cpp: the BOS-space and "<0xXX>" rules shared by every format.
std::string decode_piece_text(int64_t prev, int64_t bos, std::string piece);
}  // namespace detail

namespace {

// Stand-ins with the library's layout: the processor is opaque storage, and Status is one
// unique_ptr<Rep> (null when OK) that is non-trivial for calls, like the real one.
class Processor {};

class Status {
 public:
  Status(const Status&) = delete;
  Status& operator=(const Status&) = delete;
  ~Status();
  bool ok() const { return rep_ == nullptr; }
  std::string message() const;

 private:
  void* rep_;
};

static_assert(sizeof(Status) == sizeof(sentencepiece::util::Status));
static_assert(alignof(Status) == alignof(sentencepiece::util::Status));

// A member function pointer to the function at `address` (Itanium C++ ABI: {address, 0}).
template <typename Member>
Member member_at(void* address) {
  struct {
    void* ptr;
    std::ptrdiff_t adj;
  } raw{address, 0};
  static_assert(sizeof(Member) == sizeof(raw));
  Member member;
  std::memcpy(&member, &raw, sizeof(member));
  return member;
}

struct Api {
  void (Processor::*construct)();
  void (Processor::*destroy)();
  Status (Processor::*load)(std::string_view);
  Status (Processor::*encode)(std::string_view, std::vector<int>*) const;
  std::string (Processor::*serialized_model_proto)() const;
  int (Processor::*piece_size)() const;
  const std::string& (Processor::*id_to_piece)(int) const;
  float (Processor::*score)(int) const;
  bool (Processor::*is_control)(int) const;
  int (Processor::*bos_id)() const;
  int (Processor::*eos_id)() const;
  void (Status::*status_destroy)();
  std::string (Status::*status_to_string)() const;
};

// The library, loaded once on first use; throws flextron::Error naming `where` if it cannot be.
const Api& api(const std::string& where) {
  static std::mutex mutex;
  static Api* loaded = nullptr;  // stays null after a failure so that the next call retries
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded != nullptr) return *loaded;
  int flags = RTLD_NOW | RTLD_LOCAL;
#ifdef RTLD_DEEPBIND
  flags |= RTLD_DEEPBIND;
#endif
  void* handle = nullptr;
  std::string errors;
  for (const char* name : {"libsentencepiece.so.0", "libsentencepiece.so"}) {
    if ((handle = dlopen(name, flags)) != nullptr) break;
    const char* error = dlerror();
    errors += std::string(errors.empty() ? "" : "; ") + (error != nullptr ? error : name);
  }
  if (handle == nullptr) fail(where, "cannot load the sentencepiece library: " + errors);
  auto symbol = [&](const char* name) {
    void* address = dlsym(handle, name);
    if (address == nullptr) {
      fail(where, std::string("the sentencepiece library lacks ") + name + " (not 0.1.9x?)");
    }
    return address;
  };
  static Api resolved;
  const std::string spp = "_ZN13sentencepiece22SentencePieceProcessor";
  const std::string spp_const = "_ZNK13sentencepiece22SentencePieceProcessor";
  const std::string view = "St17basic_string_viewIcSt11char_traitsIcEE";
  resolved.construct = member_at<decltype(Api::construct)>(symbol((spp + "C1Ev").c_str()));
  resolved.destroy = member_at<decltype(Api::destroy)>(symbol((spp + "D1Ev").c_str()));
  resolved.load = member_at<decltype(Api::load)>(symbol((spp + "4LoadE" + view).c_str()));
  resolved.encode = member_at<decltype(Api::encode)>(
      symbol((spp_const + "6EncodeE" + view + "PSt6vectorIiSaIiEE").c_str()));
  resolved.serialized_model_proto = member_at<decltype(Api::serialized_model_proto)>(
      symbol((spp_const + "22serialized_model_protoB5cxx11Ev").c_str()));
  resolved.piece_size =
      member_at<decltype(Api::piece_size)>(symbol((spp_const + "12GetPieceSizeEv").c_str()));
  resolved.id_to_piece =
      member_at<decltype(Api::id_to_piece)>(symbol((spp_const + "9IdToPieceB5cxx11Ei").c_str()));
  resolved.score = member_at<decltype(Api::score)>(symbol((spp_const + "8GetScoreEi").c_str()));
  resolved.is_control =
      member_at<decltype(Api::is_control)>(symbol((spp_const + "9IsControlEi").c_str()));
  resolved.bos_id = member_at<decltype(Api::bos_id)>(symbol((spp_const + "6bos_idEv").c_str()));
  resolved.eos_id = member_at<decltype(Api::eos_id)>(symbol((spp_const + "6eos_idEv").c_str()));
  resolved.status_destroy = member_at<decltype(Api::status_destroy)>(
      symbol("_ZN13sentencepiece4util6StatusD1Ev"));
  resolved.status_to_string = member_at<decltype(Api::status_to_string)>(
      symbol("_ZNK13sentencepiece4util6Status8ToStringB5cxx11Ev"));
  loaded = &resolved;
  return *loaded;
}

// Only ever reached for a Status the library returned, i.e. after api() succeeded.
Status::~Status() { (this->*api("sentencepiece").status_destroy)(); }
std::string Status::message() const { return (this->*api("sentencepiece").status_to_string)(); }

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::filesystem::path path)
      : path_(std::move(path)), api_(api(path_.string())) {
    storage_ = ::operator new(sizeof(sentencepiece::SentencePieceProcessor),
                              std::align_val_t(alignof(sentencepiece::SentencePieceProcessor)));
    processor_ = static_cast<Processor*>(storage_);
    (processor_->*api_.construct)();
    const Status status = (processor_->*api_.load)(path_.string());
    if (!status.ok()) {
      const std::string message = status.message();
      destroy();
      fail(path_.string(), message);
    }
  }

  ~SentencePieceTokenizer() override { destroy(); }
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool add_bos) const override {
    std::vector<int> ids;
    const Status status = (processor_->*api_.encode)(text, &ids);
    if (!status.ok()) fail(path_.string(), "encode failed: " + status.message());
    std::vector<int64_t> tokens;
    tokens.reserve(ids.size() + 1);
    if (add_bos) {
      if (bos_id() < 0) fail(path_.string(), "the model defines no BOS token");
      tokens.push_back(bos_id());
    }
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    return tokens;
  }

  std::string decode_piece(int64_t prev, int64_t token) const override {
    const int id = checked(token);
    // Control pieces (<s>, </s>) print nothing, as in SentencePiece's own decoder.
    if ((processor_->*api_.is_control)(id)) return "";
    static const std::string kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space
    std::string piece = (processor_->*api_.id_to_piece)(id);
    for (size_t at = piece.find(kSpace); at != std::string::npos; at = piece.find(kSpace, at + 1))
      piece.replace(at, kSpace.size(), " ");
    return detail::decode_piece_text(prev, bos_id(), std::move(piece));
  }

  int64_t vocab_size() const override { return (processor_->*api_.piece_size)(); }
  int64_t bos_id() const override { return (processor_->*api_.bos_id)(); }
  int64_t eos_id() const override { return (processor_->*api_.eos_id)(); }
  std::string piece(int64_t id) const override {
    return (processor_->*api_.id_to_piece)(checked(id));
  }
  float score(int64_t id) const override { return (processor_->*api_.score)(checked(id)); }
  std::string file_name() const override { return "tokenizer.model"; }

  void save(const std::filesystem::path& path) const override {
    io::write_text_atomically(path, (processor_->*api_.serialized_model_proto)());
  }

 private:
  void destroy() {
    if (storage_ == nullptr) return;
    (processor_->*api_.destroy)();
    ::operator delete(storage_,
                      std::align_val_t(alignof(sentencepiece::SentencePieceProcessor)));
    storage_ = nullptr;
  }

  int checked(int64_t id) const {
    if (id < 0 || id >= vocab_size()) {
      fail(path_.string(), "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(vocab_size()) + ")");
    }
    return static_cast<int>(id);
  }

  std::filesystem::path path_;
  const Api& api_;
  void* storage_ = nullptr;
  Processor* processor_ = nullptr;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::filesystem::path& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace flextron::text
