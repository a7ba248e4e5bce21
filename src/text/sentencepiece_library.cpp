#include "text/sentencepiece_library.h"

#include <dlfcn.h>  // dlmopen needs _GNU_SOURCE, which g++ defines

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "flextron_build_paths.h"

namespace flextron::text {

namespace {

constexpr const char* kLibraryName = "libflextron_spm.so";

std::vector<std::filesystem::path> candidates() {
  std::vector<std::filesystem::path> paths;
  if (const char* env = std::getenv("FLEXTRON_SPM_BRIDGE")) paths.emplace_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back(exe.parent_path() / kLibraryName);
    paths.push_back(exe.parent_path() / ".." / "lib" / kLibraryName);
  }
#ifdef FLEXTRON_SPM_BRIDGE_DEFAULT
  paths.emplace_back(FLEXTRON_SPM_BRIDGE_DEFAULT);
#endif
  return paths;
}

template <typename F>
void resolve(void* handle, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(handle, name));
  if (out == nullptr) fail(kLibraryName, std::string("missing symbol ") + name);
}

SentencePieceLibrary open_library() {
  void* handle = nullptr;
  std::string tried;
  for (const auto& path : candidates()) {
    if (!std::filesystem::exists(path)) {
      tried += " " + path.string();
      continue;
    }
    // A link-map namespace of its own: sentencepiece and its protobuf copy see only each other
    // (and their own libstdc++ instance, so its iostreams are initialised there; RTLD_DEEPBIND
    // alone leaves std::cerr half-bound and crashes the trainer's logging).
    handle = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    tried += " " + path.string() + " (" + dlerror() + ")";
  }
  if (handle == nullptr)
    fail(kLibraryName, "cannot load the sentencepiece bridge; tried:" + tried +
                           " (set FLEXTRON_SPM_BRIDGE to its path)");
  SentencePieceLibrary lib{};
  resolve(handle, "fx_spm_load", lib.load);
  resolve(handle, "fx_spm_free", lib.free);
  resolve(handle, "fx_spm_encode", lib.encode);
  resolve(handle, "fx_spm_piece_size", lib.piece_size);
  resolve(handle, "fx_spm_id_to_piece", lib.id_to_piece);
  resolve(handle, "fx_spm_score", lib.score);
  resolve(handle, "fx_spm_is_control", lib.is_control);
  resolve(handle, "fx_spm_bos_id", lib.bos_id);
  resolve(handle, "fx_spm_eos_id", lib.eos_id);
  resolve(handle, "fx_spm_serialized", lib.serialized);
  resolve(handle, "fx_spm_train", lib.train);
  return lib;  // the handle stays open for the life of the process
}

}  // namespace

const SentencePieceLibrary& sentencepiece_library() {
  static std::once_flag once;
  static SentencePieceLibrary lib;
  static std::string error;
  std::call_once(once, [] {
    try {
      lib = open_library();
    } catch (const Error& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw Error(error);
  return lib;
}

}  // namespace flextron::text
