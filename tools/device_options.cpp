#include "device_options.h"
#include "number_options.h"

#include "runtime/quant_kernels.h"

#include <torch/torch.h>

#include "core/error.h"
#include "runtime/threads.h"

namespace flextron::cli {

void DeviceArgs::add_to(CLI::App* cmd) {
  cmd->add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  cmd->add_option("--dtype", dtype, "Weights and activations: f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--threads", threads, "CPU threads (0 = LibTorch default: one per physical core)")
      ->check(non_negative());
}

io::LoadOptions DeviceArgs::load_options() const {
  io::LoadOptions options;
  try {
    options.device = torch::Device(device);
  } catch (const c10::Error&) {
    fail("--device", "unknown device \"" + device + "\" (use cpu, cuda or cuda:N)");
  }
  if (options.device.is_cuda() && !torch::cuda::is_available())
    fail("--device", "CUDA requested but this LibTorch build or machine has no CUDA device");
  options.dtype = dtype == "bf16" ? torch::kBFloat16 : torch::kFloat;
  runtime::use_threads(threads);
  return options;
}

void add_runtime_option(CLI::App* cmd, std::string& runtime) {
  cmd->add_option("--runtime", runtime,
                  "auto: the fast CPU runtime for fp32 models on the CPU without a dynamic "
                  "router, torch otherwise; fast; torch")
      ->check(CLI::IsMember({"auto", "fast", "torch"}))
      ->capture_default_str();
}

void add_quant_option(CLI::App* cmd, std::string& quant) {
  cmd->add_option("--quant", quant,
                  "Weight format of the fast runtime: auto (the model directory's own: f32, or "
                  "what flextron quantize wrote), f32, q8_0 or q4_0 (llama.cpp's blocks of 32, "
                  "quantized once at load; activations quantized per block too)")
      ->check([](const std::string& v) {
        try {
          if (v != "auto") runtime::qk::parse_format(v, "--quant");
        } catch (const std::exception& e) {
          return std::string(e.what());
        }
        return std::string();
      })
      ->capture_default_str();
}

}  // namespace flextron::cli
