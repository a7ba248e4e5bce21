// flextron tokenizer train: a SentencePiece BPE tokenizer with byte fallback.
// flextron tokenizer encode: a file's tokens, and how fast (the throughput benchmark's harness).
#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "io/files.h"
#include "io/gguf_tokenizer.h"
#include "number_options.h"

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
  cmd->add_option("--vocab-size", options->vocab_size, "Vocabulary size")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--out", *out, "Output directory (gets tokenizer.model)")->required();
  cmd->add_option("--threads", options->threads, "Threads")
      ->check(positive())
      ->capture_default_str();
  cmd->callback([=] {
    std::vector<std::filesystem::path> paths(files->begin(), files->end());
    const auto model = text::train_sentencepiece(paths, *out, *options);
    const auto tok = text::load_sentencepiece_tokenizer(model);
    std::cout << "wrote " << model.string() << " (" << tok->vocab_size() << " pieces)\n";
  });

  auto model = std::make_shared<std::string>();
  auto file = std::make_shared<std::string>();
  auto json_out = std::make_shared<bool>(false);
  auto print_ids = std::make_shared<bool>(false);
  auto save_dir = std::make_shared<std::string>();
  auto* enc = group->add_subcommand("encode", "Encode a text file; report tokens and seconds");
  enc->add_option("--model", *model,
                  "Model directory, .gguf, tokenizer.json, SentencePiece .model or vocab.json")
      ->required();
  enc->add_option("--encode-file", *file, "Text file to encode (as one string)")->required();
  enc->add_flag("--json", *json_out, "One JSON line: kind, bytes, tokens, seconds, MB/s");
  enc->add_flag("--ids", *print_ids, "Also print the token ids");
  enc->add_option("--save", *save_dir,
                  "Also save the tokenizer into this directory, as a model directory holds it");
  enc->callback([=] {
    const auto tok = io::load_tokenizer_path(*model);
    if (!save_dir->empty()) {
      std::filesystem::create_directories(*save_dir);
      tok->save(std::filesystem::path(*save_dir) / tok->file_name());
    }
    const std::string text = io::read_file(*file);
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text, false);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    nlohmann::json j = {{"kind", tok->kind()},
                        {"bytes", text.size()},
                        {"tokens", ids.size()},
                        {"seconds", seconds},
                        {"mb_per_s", static_cast<double>(text.size()) / 1e6 / seconds}};
    if (*print_ids) j["ids"] = ids;
    if (*json_out) {
      std::cout << j.dump() << "\n";
    } else {
      std::cout << tok->kind() << ": " << ids.size() << " tokens from " << text.size()
                << " bytes in " << seconds << " s (" << j["mb_per_s"].get<double>() << " MB/s)\n";
      if (*print_ids)
        for (int64_t id : ids) std::cout << id << "\n";
    }
  });
}

}  // namespace flextron::cli
