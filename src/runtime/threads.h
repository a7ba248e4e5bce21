// How many CPU threads LibTorch's intra-op pool uses.
#pragma once

namespace flextron::runtime {

// Sets the pool to `requested` threads; requested <= 0 keeps LibTorch's default (one per
// physical core: on a 2-vCPU VM whose vCPUs are hyperthreads of one core that is 1, and measured
// there a second thread made a training step ~2x slower). Returns the count in use.
int use_threads(int requested);

}  // namespace flextron::runtime
