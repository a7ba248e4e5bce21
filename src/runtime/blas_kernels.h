// Which kernels OpenBLAS runs. OpenBLAS (a DYNAMIC_ARCH build, as Debian ships) picks them by CPU
// model when it loads, and a release older than the CPU does not know it: Debian 12's 0.3.21 takes
// a Sapphire/Emerald Rapids Xeon for a "Prescott" and runs SSE3 kernels, measured 2.4x slower at
// sgemv (11 vs 26 GB/s on one core, 8192 x 384) than its own AVX-512 ones on the same machine.
#pragma once

#include <string>

namespace flextron::runtime {

// When OpenBLAS fell back to a pre-AVX core although the CPU has AVX-512 (or AVX2 and FMA),
// re-selects its SkylakeX (or Haswell) kernels, as OPENBLAS_CORETYPE would at start-up. Call once
// at program start, before any BLAS call and before other threads exist. Does nothing when
// OPENBLAS_CORETYPE is set, when FLEXTRON_BLAS_KERNELS=0, or when OpenBLAS is not a DYNAMIC_ARCH
// build. Returns the core whose kernels are in use ("" when OpenBLAS is not the BLAS).
std::string select_blas_kernels();

// The core whose kernels OpenBLAS runs ("" when OpenBLAS is not the BLAS).
std::string blas_core();

// While one exists, OpenBLAS runs single-threaded: the fast engine's own team runs its products,
// one share per thread, and OpenBLAS must not start threads of its own inside them. The fast
// engines hold one for their lifetime (the count is shared; the last restores OpenBLAS's thread
// count) rather than setting it around every pass: a pass of a small model takes tens of
// microseconds, and setting the count takes OpenBLAS's server lock each time. LibTorch's own
// intra-op threads are not affected.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

}  // namespace flextron::runtime
