// flextron export --to hf|llama2c: write a model directory in another format.
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "core/error.h"
#include "io/llama2c_checkpoint.h"
#include "io/model_dir.h"

namespace flextron::cli {

namespace {
struct ExportArgs {
  std::string model;
  std::string to;
  std::string out;
  std::string tokenizer_out;
};

void run_export(const ExportArgs& a) {
  auto loaded = io::load_model_dir(a.model);
  if (a.to == "hf") {
    io::save_model_dir(a.out, *loaded.model, loaded.tokenizer.get(), &loaded.space);
    std::cout << "exported " << a.model << " -> " << a.out << " (HuggingFace Llama)\n";
    return;
  }
  const std::filesystem::path out(a.out);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  io::write_llama2c_checkpoint(out, loaded.model->config(), loaded.model->state());
  std::cout << "exported " << a.model << " -> " << a.out << " (llama2.c)\n";
  if (loaded.tokenizer) {
    const auto tok_path = a.tokenizer_out.empty() ? out.parent_path() / "tokenizer.bin"
                                                  : std::filesystem::path(a.tokenizer_out);
    text::save_llama2c_tokenizer(*loaded.tokenizer, tok_path);
    std::cout << "tokenizer -> " << tok_path.string() << "\n";
  }
}
}  // namespace

void register_export(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  auto* cmd = app.add_subcommand(
      "export", "Write a model directory as a HuggingFace directory or a llama2.c checkpoint");
  cmd->add_option("--model", args->model, "Model directory")->required();
  cmd->add_option("--to", args->to, "Target format")
      ->required()
      ->check(CLI::IsMember({"hf", "llama2c"}));
  cmd->add_option("--out", args->out, "Output directory (hf) or .bin file (llama2c)")->required();
  cmd->add_option("--tokenizer-out", args->tokenizer_out,
                  "llama2c: where to write tokenizer.bin (default: beside --out)");
  cmd->callback([args] { run_export(*args); });
}

}  // namespace flextron::cli
