// Data-parallel training across processes and machines on PyTorch's own c10d: a TCPStore
// rendezvous and ProcessGroupGloo (CPU; NCCL when built with FLEXTRON_NCCL for CUDA). Configured
// the torchrun way: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and LOCAL_RANK for the GPU).
// Every process runs the same steps on its share of each batch; gradients are averaged, so the
// update equals one process on the whole batch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace flextron::train {

struct DistributedSettings {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  double timeout_seconds = 300;
};

// From the environment; world_size 1 when WORLD_SIZE is unset. Throws flextron::Error naming
// the variable for a malformed or inconsistent value.
DistributedSettings distributed_settings_from_env();

class DataParallel {
 public:
  // Joins the group (blocks until every rank has arrived, up to the timeout).
  DataParallel(const DistributedSettings& settings, torch::Device device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }

  // Averages the gradients of `params` over all ranks (one flattened all-reduce).
  void average_gradients(const std::vector<torch::Tensor>& params);
  // Copies rank 0's values of `tensors` to every rank.
  void broadcast(const std::vector<torch::Tensor>& tensors);
  // Mean of a scalar over ranks.
  double average(double value);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int world_size_ = 1;
};

}  // namespace flextron::train
