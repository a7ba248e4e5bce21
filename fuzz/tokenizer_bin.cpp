// llama2.c tokenizer.bin bytes (for a 512-token model, as stories260K's tok512.bin), then a
// round of encoding and decoding with what loaded.
#include "fuzz_target.h"
#include "text/tokenizer.h"

FLEXTRON_FUZZ_TARGET(tokenizer_bin) {
  using namespace flextron;
  fuzz::expect_clean([&] {
    auto tokenizer = text::load_llama2c_tokenizer(
        fuzz::scratch_file("tokenizer.bin", fuzz::bytes_of(data, size)), 512);
    tokenizer->decode(tokenizer->encode("Once upon a time, 42 cats.", true));
  });
  return 0;
}
