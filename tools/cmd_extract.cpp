// flextron extract: one architecture of an elastic model as a standalone dense model directory.
#include <cstdio>
#include <iostream>

#include "arch_options.h"
#include "commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "model/extract.h"

namespace flextron::cli {

namespace {
struct ExtractArgs {
  std::string model;
  std::string out;
  ArchArgs arch;
};

void run_extract(const ExtractArgs& a) {
  if (!a.arch.given())
    fail("extract", "give the sub-network with --arch, --arch-layers or --budget");
  auto loaded = io::load_model_dir(a.model);
  const auto selection = a.arch.resolve(loaded, a.model);
  const auto& arch = selection.arch;
  auto dense = model::extract_subnetwork(*loaded.model, arch);
  // The dense model is elastic again: its own default grid, and its units keep their order
  // (a prefix of a ranked order is ranked).
  auto space = model::default_elastic_space(dense->config());
  space.ranked = loaded.space.ranked;
  io::save_model_dir(a.out, *dense, loaded.tokenizer.get(), &space);
  // Which sub-network of the source this is, in the form --arch reads back (e.g. to extract the
  // same shape from another checkpoint of the same model).
  io::write_text_atomically(
      std::filesystem::path(a.out) / "architecture.json",
      model::architecture_to_json(arch.empty() ? model::full_architecture(loaded.model->config())
                                               : arch)
              .dump(2) +
          "\n");
  const auto full = loaded.model->parameter_count(), kept = dense->parameter_count();
  std::printf("extracted %s: %lld of %lld parameters (%.1f%%) -> %s\n",
              selection.describe(loaded.model->config()).c_str(), static_cast<long long>(kept),
              static_cast<long long>(full),
              100.0 * static_cast<double>(kept) / static_cast<double>(full), a.out.c_str());
}
}  // namespace

void register_extract(CLI::App& app) {
  auto a = std::make_shared<ExtractArgs>();
  auto* cmd = app.add_subcommand("extract", "Write one sub-network as a standalone dense model");
  cmd->add_option("--model", a->model, "Elastic (ranked) model directory")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  a->arch.add_to(cmd, /*with_dynamic=*/false);
  cmd->callback([a] { run_extract(*a); });
}

}  // namespace flextron::cli
