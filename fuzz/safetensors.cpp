// safetensors bytes: header length, JSON header, dtypes, shapes, offsets tiling the data.
#include "io/safetensors.h"
#include "fuzz_target.h"

FLEXTRON_FUZZ_TARGET(safetensors) {
  using namespace flextron;
  fuzz::expect_clean(
      [&] { io::parse_safetensors(fuzz::bytes_of(data, size), "model.safetensors"); });
  return 0;
}
