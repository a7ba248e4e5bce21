// flextron export --to hf|llama2c|gguf: write a model directory in another format; --arch or
// --budget exports that sub-network.
#include <filesystem>
#include <iostream>
#include <map>

#include "arch_options.h"
#include "commands.h"
#include "core/error.h"
#include "io/files.h"
#include "io/gguf_model.h"
#include "io/llama2c_checkpoint.h"
#include "io/model_dir.h"
#include "model/extract.h"

namespace flextron::cli {

namespace {
struct ExportArgs {
  std::string model;
  std::string to;
  std::string out;
  std::string tokenizer_out;
  std::string gguf_type = "f32";
  ArchArgs arch;
};

void run_export(const ExportArgs& a) {
  auto loaded = io::load_model_dir(a.model);
  if (a.arch.given()) {
    auto selection = a.arch.resolve(loaded, a.model);
    // Described against the elastic model (after extraction its own config is 100%).
    std::cerr << "sub-network: " << selection.describe(loaded.model->config()) << "\n";
    if (!selection.arch.empty())
      loaded.model = model::extract_subnetwork(*loaded.model, selection.arch);
  }
  if (a.to == "gguf") {
    const auto out = io::output_file(a.out, "model.gguf");
    const std::map<std::string, quant::GgmlType> types = {{"f32", quant::GgmlType::F32},
                                                          {"f16", quant::GgmlType::F16},
                                                          {"bf16", quant::GgmlType::BF16},
                                                          {"q8_0", quant::GgmlType::Q8_0},
                                                          {"q4_0", quant::GgmlType::Q4_0}};
    io::save_gguf_model(out, *loaded.model, loaded.tokenizer.get(), types.at(a.gguf_type));
    std::cout << "exported " << a.model << " -> " << out.string() << " (GGUF v3, " << a.gguf_type
              << ")\n";
    return;
  }
  if (a.to == "hf") {
    io::save_model_dir(a.out, *loaded.model, loaded.tokenizer.get(), &loaded.space);
    std::cout << "exported " << a.model << " -> " << a.out << " (HuggingFace "
              << (loaded.model->config().gpt() ? "GPT-2" : "Llama") << ")\n";
    return;
  }
  const auto out = io::output_file(a.out, "model.bin");
  io::write_llama2c_checkpoint(out, loaded.model->config(), loaded.model->state());
  std::cout << "exported " << a.model << " -> " << out.string() << " (llama2.c)\n";
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
      "export",
      "Write a model directory as a HuggingFace directory, a llama2.c checkpoint or GGUF");
  cmd->add_option("--model", args->model, "Model directory")->required();
  cmd->add_option("--to", args->to, "Target format")
      ->required()
      ->check(CLI::IsMember({"hf", "llama2c", "gguf"}));
  cmd->add_option("--out", args->out,
                  "Output directory (hf), .bin file (llama2c) or .gguf file; for llama2c and "
                  "gguf an existing directory or a path ending in / gets model.bin / model.gguf")
      ->required();
  cmd->add_option("--gguf-type", args->gguf_type,
                  "GGUF matrices: f32, f16, bf16, or q8_0 / q4_0 (llama.cpp's reference "
                  "quantization; norms stay f32)")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0", "q4_0"}))
      ->capture_default_str();
  args->arch.add_to(cmd, /*with_dynamic=*/false);
  cmd->add_option("--tokenizer-out", args->tokenizer_out,
                  "llama2c: where to write tokenizer.bin (default: beside --out)");
  cmd->callback([args] { run_export(*args); });
}

}  // namespace flextron::cli
