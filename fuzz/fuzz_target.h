// What every fuzz target shares. A target feeds the bytes to one reader; the reader must either
// succeed or throw flextron::Error (a one-line message naming the problem). Anything else, a
// crash, a sanitizer report, another exception type (std::bad_alloc from sizes trusted too
// early, nlohmann's type_error, c10::Error), escapes LLVMFuzzerTestOneInput and is a finding.
// Built two ways: with clang's libFuzzer (scripts/fuzz.sh, -DFLEXTRON_LIBFUZZER: each target is
// its own LLVMFuzzerTestOneInput) and, for the test suite, as one program, flextron_fuzz
// (replay_main.cpp), in which every target registers itself by name and which replays a corpus
// and mutates it for a few seconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"

namespace flextron::fuzz {

inline std::string bytes_of(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// A reader that takes a path gets the bytes through a file private to this process (removed
// and rewritten for each input).
std::filesystem::path scratch_file(const std::string& name, const std::string& bytes);
std::filesystem::path scratch_dir(const std::string& name);

// Runs `read`, keeping flextron::Error (the expected outcome of bad input) quiet.
template <typename F>
void expect_clean(F&& read) {
  try {
    read();
  } catch (const Error&) {
  }
}

// The tiny Llama the seeds are written for and the targets that need a model check against:
// 2 layers, hidden 32, MLP 64, 4 heads / 2 KV heads, vocabulary 512 (stories260K's tok512),
// context 64.
model::ModelConfig tiny_config();
// The budgets its routers are made for (seeds and the route_files target agree on them).
inline const std::vector<double> kTinyBudgets = {0.5, 0.75, 1.0};

// A finding that is not a crash (a property the target checks was violated).
[[noreturn]] void violated(const std::string& property);

using TargetFunction = int (*)(const uint8_t* data, size_t size);
std::map<std::string, TargetFunction>& targets();
inline bool register_target(const char* name, TargetFunction function) {
  targets()[name] = function;
  return true;
}

}  // namespace flextron::fuzz

// FLEXTRON_FUZZ_TARGET(name) { ...body using data, size... }
#ifdef FLEXTRON_LIBFUZZER
#define FLEXTRON_FUZZ_TARGET(name) \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
#else
#define FLEXTRON_FUZZ_TARGET(name)                            \
  static int fuzz_##name(const uint8_t* data, size_t size);   \
  [[maybe_unused]] static const bool fuzz_registered_##name = \
      flextron::fuzz::register_target(#name, fuzz_##name);    \
  static int fuzz_##name(const uint8_t* data, size_t size)
#endif
