// flextron tokenizer train: a SentencePiece BPE tokenizer with byte fallback.
#include <iostream>

#include "commands.h"
#include "text/sentencepiece_trainer.h"
#include "text/tokenizer.h"

namespace flextron::cli {

void register_tokenizer(CLI::App& app) {
  auto* group = app.add_subcommand("tokenizer", "Tokenizer tools");
  group->require_subcommand(1);
  auto files = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto options = std::make_shared<text::TokenizerTrainOptions>();
  auto* cmd = group->add_subcommand(
      "train", "Train a SentencePiece BPE tokenizer (byte fallback) on text files");
  cmd->add_option("--data", *files, "Training text files")->required()->expected(1, -1);
  cmd->add_option("--vocab-size", options->vocab_size, "Vocabulary size")->capture_default_str();
  cmd->add_option("--out", *out, "Output directory (gets tokenizer.model)")->required();
  cmd->add_option("--threads", options->threads, "Threads")->capture_default_str();
  cmd->callback([=] {
    std::vector<std::filesystem::path> paths(files->begin(), files->end());
    const auto model = text::train_sentencepiece(paths, *out, *options);
    const auto tok = text::load_sentencepiece_tokenizer(model);
    std::cout << "wrote " << model.string() << " (" << tok->vocab_size() << " pieces)\n";
  });
}

}  // namespace flextron::cli
