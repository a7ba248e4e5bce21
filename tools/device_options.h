// Flags shared by every command that runs a model: device, dtype, threads, runtime.
#pragma once

#include <string>

#include <torch/types.h>
#include <CLI/CLI.hpp>

#include "io/model_dir.h"

namespace flextron::cli {

struct DeviceArgs {
  std::string device = "cpu";
  std::string dtype = "f32";
  int threads = 0;  // 0 = LibTorch default (one per physical core)

  void add_to(CLI::App* cmd);
  // Applies --threads and turns the flags into load options; checks the device exists.
  io::LoadOptions load_options() const;
};

// --runtime auto|fast|torch for the commands that decode (generate, profile, eval): see
// runtime::use_fast_runtime.
void add_runtime_option(CLI::App* cmd, std::string& runtime);

// --quant f32|q8_0|q4_0: the fast runtime's weight format (runtime/quant_kernels.h), quantized
// once at load.
void add_quant_option(CLI::App* cmd, std::string& quant);

}  // namespace flextron::cli
