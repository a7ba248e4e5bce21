#include "arch_options.h"

#include "core/error.h"

namespace flextron::cli {

void ArchArgs::add_to(CLI::App* cmd) {
  auto* uniform = cmd->add_option(
      "--arch", arch,
      "Sub-network: \"mlp=F,attn=F\" (fractions in (0,1] or unit counts) or a .json file");
  auto* layers = cmd->add_option("--arch-layers", arch_layers,
                                 "Per-layer widths: \"mlp:F1,F2,...;attn:F1,F2,...\"");
  uniform->excludes(layers);
}

model::Architecture ArchArgs::resolve(const io::LoadedModel& loaded) const {
  if (!given()) return {};
  return model::parse_architecture(arch.empty() ? arch_layers : arch, loaded.model->config(),
                                   loaded.space);
}

}  // namespace flextron::cli
