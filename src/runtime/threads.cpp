#include "runtime/threads.h"

#include <ATen/Parallel.h>

namespace flextron::runtime {

int use_threads(int requested) {
  if (requested > 0) at::set_num_threads(requested);
  return at::get_num_threads();
}

}  // namespace flextron::runtime
