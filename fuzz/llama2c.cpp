// llama2.c checkpoint bytes: the 7-int header, its sizes against the file, the weights.
#include "fuzz_target.h"
#include "io/llama2c_checkpoint.h"

FLEXTRON_FUZZ_TARGET(llama2c) {
  using namespace flextron;
  fuzz::expect_clean([&] {
    io::read_llama2c_checkpoint(fuzz::scratch_file("model.bin", fuzz::bytes_of(data, size)));
  });
  return 0;
}
