// CPU memory reuse. LibTorch's CPU allocator takes every tensor from malloc. glibc serves blocks
// above its mmap threshold (128 KiB, growing to at most 32 MiB) with a fresh mmap and unmaps them
// on free, so the activations a training step or a long prefill frees and reallocates every step
// are page-faulted and zeroed by the kernel again and again. Measured on the `small` preset
// (bench/elastic_widths, 2 cores): a full-width training step took 2.2-2.7 s with glibc's
// defaults and 0.75-1.0 s with large blocks kept in the heap.
#pragma once

namespace flextron::runtime {

// Keeps freed memory in the process for reuse: raises glibc's mmap and trim thresholds to 1 GiB
// (blocks above that still come from mmap). Call once at program start, before large
// allocations. A no-op on other C libraries or when FLEXTRON_MALLOC_TUNING=0. Returns whether
// the settings were applied.
bool keep_freed_memory();

// Hands the heap's free memory back to the system (glibc's malloc_trim): after loading a model,
// whose file buffers the settings above would otherwise keep resident beside the weights.
void release_freed_memory();

}  // namespace flextron::runtime
