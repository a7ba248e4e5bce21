// HuggingFace tokenizer.json bytes (model, normalizer, pre-tokenizer, decoder, added tokens),
// then a round of encoding and decoding with what loaded.
#include "fuzz_target.h"
#include "text/tokenizer.h"

FLEXTRON_FUZZ_TARGET(tokenizer_json) {
  using namespace flextron;
  fuzz::expect_clean([&] {
    const auto dir = fuzz::scratch_dir("tokenizer");
    const auto path = dir / "tokenizer.json";
    std::filesystem::copy_file(fuzz::scratch_file("tokenizer.json", fuzz::bytes_of(data, size)),
                               path, std::filesystem::copy_options::overwrite_existing);
    auto tokenizer = text::load_hf_tokenizer(path);
    tokenizer->decode(tokenizer->encode("Hello, world! 123 \xc3\xa9t\xc3\xa9", true));
  });
  return 0;
}
