// flextron quantize: store a model's matrices as Q8_0 or Q4_0 blocks (pipeline/quantize.h).
#include <cstdio>

#include "commands.h"
#include "pipeline/quantize.h"

namespace flextron::cli {

void register_quantize(CLI::App& app) {
  struct Args {
    std::string model, out, type;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "quantize", "Store a model's matrices as q8_0 or q4_0 blocks (the fast runtime's formats)");
  cmd->add_option("--model", a->model, "Model directory")->required();
  cmd->add_option("--type", a->type, "q8_0 or q4_0")->required();
  cmd->add_option("--out", a->out, "Output model directory")->required();
  cmd->callback([a] {
    const auto format = runtime::qk::parse_format(a->type, "--type");
    const auto r = pipeline::quantize_model_dir(a->model, a->out, format);
    std::printf("%s: %s weights, %.1f MiB -> %.1f MiB (%.1f%%)\n", a->out.c_str(),
                runtime::qk::format_name(format), r.bytes_before / 1048576.0,
                r.bytes_after / 1048576.0,
                r.bytes_before > 0 ? 100.0 * r.bytes_after / r.bytes_before : 0.0);
    for (const auto& note : r.notes) std::printf("note: %s\n", note.c_str());
  });
}

}  // namespace flextron::cli
