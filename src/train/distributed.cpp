#include "train/distributed.h"

#include <chrono>
#include <cstdlib>

#include <torch/torch.h>

// ProcessGroupGloo.hpp is only compiled in when the build says gloo is there (TorchConfig.cmake
// usually defines it); LibTorch's own builds (Debian's, the CUDA 2.x archives) ship gloo.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef FLEXTRON_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "core/error.h"

namespace flextron::train {

namespace {

int env_int(const char* name, int fallback, int min, int max) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(v, &end, 10);
  if (*end != '\0' || value < min || value > max)
    fail(name, std::string("\"") + v + "\" is not an integer in [" + std::to_string(min) + ", " +
                   std::to_string(max) + "]");
  return static_cast<int>(value);
}

}  // namespace

DistributedSettings distributed_settings_from_env() {
  DistributedSettings s;
  s.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  s.rank = env_int("RANK", 0, 0, s.world_size - 1);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0')
    s.master_addr = addr;
  s.master_port = env_int("MASTER_PORT", s.master_port, 1, 65535);
  return s;
}

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

DataParallel::DataParallel(const DistributedSettings& s, torch::Device device)
    : impl_(std::make_unique<Impl>()), rank_(s.rank), world_size_(s.world_size) {
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(s.timeout_seconds * 1000));
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(s.master_port);
  store_options.isServer = s.rank == 0;
  store_options.numWorkers = static_cast<size_t>(s.world_size);
  store_options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(s.master_addr, store_options);
#ifdef FLEXTRON_NCCL
    if (device.is_cuda()) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      impl_->group =
          c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, s.rank, s.world_size, options);
      return;
    }
#endif
    if (device.is_cuda())
      fail("data parallel", "this build has no NCCL (configure with -DFLEXTRON_NCCL=ON)");
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const char* iface = std::getenv("GLOO_SOCKET_IFNAME");
    if (iface != nullptr && *iface != '\0')
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    else if (s.master_addr == "127.0.0.1" || s.master_addr == "localhost")
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group =
        c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, s.rank, s.world_size, options);
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    fail("data parallel", "rank " + std::to_string(s.rank) + " of " + std::to_string(s.world_size) +
                              " could not join " + s.master_addr + ":" +
                              std::to_string(s.master_port) + ": " +
                              message.substr(0, message.find('\n')));
  }
}

DataParallel::~DataParallel() = default;

void DataParallel::average_gradients(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros_like(p).view({-1}));
  std::vector<torch::Tensor> flat{torch::cat(grads)};
  impl_->group->allreduce(flat)->wait();
  flat[0].div_(static_cast<double>(world_size_));
  int64_t offset = 0;
  torch::NoGradGuard no_grad;
  for (const auto& p : params) {
    const int64_t n = p.numel();
    auto slice = flat[0].narrow(0, offset, n).view(p.sizes());
    if (p.grad().defined())
      p.mutable_grad().copy_(slice);
    else
      p.mutable_grad() = slice.clone();
    offset += n;
  }
}

void DataParallel::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (const auto& t : tensors) {
    std::vector<torch::Tensor> one{t.detach()};
    impl_->group->broadcast(one)->wait();
  }
}

double DataParallel::average(double value) {
  std::vector<torch::Tensor> one{torch::tensor({value}, torch::kDouble)};
  impl_->group->allreduce(one)->wait();
  return one[0].item<double>() / world_size_;
}

void DataParallel::barrier() {
  impl_->group->barrier()->wait();
}

}  // namespace flextron::train
