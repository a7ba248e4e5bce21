#include "runtime/allocator.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace flextron::runtime {

bool keep_freed_memory() {
  const char* env = std::getenv("FLEXTRON_MALLOC_TUNING");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
#if defined(__GLIBC__)
  constexpr int kOneGiB = 1 << 30;
  // Setting the thresholds explicitly also turns off glibc's dynamic threshold adjustment.
  return mallopt(M_MMAP_THRESHOLD, kOneGiB) == 1 && mallopt(M_TRIM_THRESHOLD, kOneGiB) == 1;
#else
  return false;
#endif
}

void release_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace flextron::runtime
