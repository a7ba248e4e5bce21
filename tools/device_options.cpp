#include "device_options.h"

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
      ->check(CLI::NonNegativeNumber);
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

}  // namespace flextron::cli
