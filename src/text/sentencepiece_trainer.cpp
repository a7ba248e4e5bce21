#include "text/sentencepiece_trainer.h"

#include <string>

#include "core/error.h"
#include "text/sentencepiece_library.h"

namespace flextron::text {

namespace fs = std::filesystem;

fs::path train_sentencepiece(const std::vector<fs::path>& files, const fs::path& out_dir,
                             const TokenizerTrainOptions& options) {
  if (files.empty()) fail("--data", "no training text given");
  // 256 byte pieces + unk/bos/eos must fit, with room for merges.
  if (options.vocab_size < 300)
    fail("--vocab-size", "must be at least 300 (256 byte-fallback pieces + specials), got " +
                             std::to_string(options.vocab_size));
  std::string inputs;
  for (const auto& f : files) {
    if (!fs::is_regular_file(f)) fail(f.string(), "not a readable file");
    if (fs::file_size(f) == 0) fail(f.string(), "empty file");
    if (f.string().find(',') != std::string::npos)
      fail(f.string(), "sentencepiece cannot take a path containing ','");
    inputs += (inputs.empty() ? "" : ",") + fs::absolute(f).string();
  }
  fs::create_directories(out_dir);
  const auto prefix = out_dir / "tokenizer.training";
  // Llama-2's choices: BPE, byte fallback, digits split, whitespace kept as is (identity
  // normalisation), unk=0 bos=1 eos=2, no padding piece.
  const std::string args =
      "--input=" + inputs + " --model_prefix=" + prefix.string() +
      " --vocab_size=" + std::to_string(options.vocab_size) +
      " --model_type=bpe --byte_fallback=true --split_digits=true --character_coverage=0.9995"
      " --normalization_rule_name=identity --remove_extra_whitespaces=false"
      " --allow_whitespace_only_pieces=true --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
      " --max_sentence_length=16384 --shuffle_input_sentence=true --minloglevel=1"
      " --input_sentence_size=" +
      std::to_string(options.max_sentences) + " --num_threads=" + std::to_string(options.threads);
  char err[1024] = {0};
  if (sentencepiece_library().train(args.c_str(), err, sizeof(err)) != 0)
    fail("tokenizer training", err);
  const auto model = out_dir / "tokenizer.model";
  fs::rename(fs::path(prefix.string() + ".model"), model);
  fs::remove(fs::path(prefix.string() + ".vocab"));
  return model;
}

}  // namespace flextron::text
