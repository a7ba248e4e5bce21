// flextron import --from llama2c|hf|gguf: bring a checkpoint into a native model directory.
#include <iostream>

#include <torch/torch.h>

#include "commands.h"
#include "core/error.h"
#include "io/gguf_model.h"
#include "io/llama2c_checkpoint.h"
#include "io/model_dir.h"

namespace flextron::cli {

namespace {
struct ImportArgs {
  std::string from;
  std::string model;
  std::string tokenizer;
  std::string out;
};

void run_import(const ImportArgs& a) {
  if (a.from == "llama2c") {
    auto ck = io::read_llama2c_checkpoint(a.model);
    model::Transformer m(ck.config);
    m->load_state(ck.tensors, a.model);
    std::unique_ptr<text::Tokenizer> tok;
    if (!a.tokenizer.empty())
      tok = text::load_llama2c_tokenizer(a.tokenizer, ck.config.vocab_size);
    else
      std::cerr << "note: no --tokenizer given; the model directory will have no tokenizer\n";
    io::save_model_dir(a.out, *m, tok.get());
  } else if (a.from == "gguf") {
    if (!a.tokenizer.empty()) fail("--tokenizer", "only used with --from llama2c");
    io::import_gguf_model(a.model, a.out);
  } else {  // hf
    if (!a.tokenizer.empty()) fail("--tokenizer", "only used with --from llama2c");
    io::LoadOptions options;
    auto loaded = io::load_model_dir(a.model, options);
    for (const auto& note : loaded.notes) std::cerr << "note: " << note << "\n";
    io::save_model_dir(a.out, *loaded.model, loaded.tokenizer.get());
  }
  std::cout << "imported " << a.model << " -> " << a.out << "\n";
}
}  // namespace

void register_import(CLI::App& app) {
  auto args = std::make_shared<ImportArgs>();
  auto* cmd = app.add_subcommand(
      "import",
      "Convert a llama2.c, HuggingFace (Llama, GPT-2) or GGUF checkpoint into a model directory");
  cmd->add_option("--from", args->from, "Source format")
      ->required()
      ->check(CLI::IsMember({"llama2c", "hf", "gguf"}));
  cmd->add_option("--model", args->model,
                  "llama2.c .bin file, HuggingFace Llama or GPT-2 model directory, or .gguf file")
      ->required();
  cmd->add_option("--tokenizer", args->tokenizer, "llama2.c tokenizer .bin (with --from llama2c)");
  cmd->add_option("--out", args->out, "Output model directory")->required();
  cmd->callback([args] { run_import(*args); });
}

}  // namespace flextron::cli
