#include "runtime/blas_kernels.h"

#include <cstdlib>
#include <cstring>
#include <mutex>

// OpenBLAS's own entry points. The dynamic-arch pair is in every DYNAMIC_ARCH build but not in
// the cblas header, hence weak: absent, the selection is left as it is.
extern "C" {
char* openblas_get_corename(void) __attribute__((weak));
void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));
int openblas_get_num_threads(void) __attribute__((weak));
void openblas_set_num_threads(int) __attribute__((weak));
}

namespace flextron::runtime {

namespace {

// OpenBLAS's fallbacks for an x86-64 CPU it does not recognise.
bool is_fallback_core(const std::string& core) {
  return core == "Prescott" || core == "Core2" || core == "Nehalem" || core == "Penryn" ||
         core == "Dunnington" || core == "Sandybridge";
}

const char* best_known_core() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512cd"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

}  // namespace

std::string blas_core() {
  return openblas_get_corename != nullptr ? openblas_get_corename() : "";
}

std::string select_blas_kernels() {
  if (openblas_get_corename == nullptr) return "";
  std::string core = openblas_get_corename();
  const char* off = std::getenv("FLEXTRON_BLAS_KERNELS");
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || (off != nullptr && std::strcmp(off, "0") == 0))
    return core;
  const char* better = best_known_core();
  if (better == nullptr || !is_fallback_core(core) || gotoblas_dynamic_init == nullptr ||
      gotoblas_dynamic_quit == nullptr)
    return core;
  // gotoblas_dynamic_init reads OPENBLAS_CORETYPE; unset afterwards so that child processes
  // (a reference engine run by `flextron bench`) start as they would on their own.
  setenv("OPENBLAS_CORETYPE", better, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
  return openblas_get_corename();
}

namespace {
std::mutex single_threaded_mutex;
int single_threaded_holders = 0;
int saved_blas_threads = 1;
}  // namespace

SingleThreadedBlas::SingleThreadedBlas() {
  if (openblas_get_num_threads == nullptr || openblas_set_num_threads == nullptr) return;
  std::lock_guard<std::mutex> lock(single_threaded_mutex);
  if (single_threaded_holders++ > 0) return;
  saved_blas_threads = openblas_get_num_threads();
  if (saved_blas_threads != 1) openblas_set_num_threads(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (openblas_get_num_threads == nullptr || openblas_set_num_threads == nullptr) return;
  std::lock_guard<std::mutex> lock(single_threaded_mutex);
  if (--single_threaded_holders > 0) return;
  if (saved_blas_threads != 1) openblas_set_num_threads(saved_blas_threads);
}

}  // namespace flextron::runtime
