// GGUF bytes: the file-level reader (header, metadata, tensor infos, offsets, blocks), then, when
// the file parses, its vocabulary as a tokenizer and the model import with its metadata checks.
#include "io/gguf.h"
#include "fuzz_target.h"
#include "io/gguf_model.h"
#include "io/gguf_tokenizer.h"

FLEXTRON_FUZZ_TARGET(gguf) {
  using namespace flextron;
  const auto bytes = fuzz::bytes_of(data, size);
  fuzz::expect_clean([&] {
    const auto file = io::parse_gguf(bytes, "input.gguf");
    if (file.metadata.count("tokenizer.ggml.model"))
      fuzz::expect_clean([&] {
        auto tokenizer = io::gguf_tokenizer(file.metadata, "input.gguf");
        tokenizer->decode(tokenizer->encode("Hello, world! 123", true));
      });
    io::import_gguf_model(fuzz::scratch_file("input.gguf", bytes), fuzz::scratch_dir("model"));
  });
  return 0;
}
