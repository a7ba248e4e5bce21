#include "model/permutation.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <string>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::model {

namespace {

void check_permutation(const std::vector<int64_t>& order, int64_t n, const std::string& what) {
  std::vector<bool> seen(static_cast<size_t>(n), false);
  if (static_cast<int64_t>(order.size()) != n)
    fail("unit order", what + " has " + std::to_string(order.size()) + " entries for " +
                           std::to_string(n) + " units");
  for (int64_t i : order) {
    if (i < 0 || i >= n || seen[static_cast<size_t>(i)])
      fail("unit order", what + " is not a permutation of 0.." + std::to_string(n - 1));
    seen[static_cast<size_t>(i)] = true;
  }
}

// Row indices of `units` blocks of `block` rows each, in `order`.
torch::Tensor block_rows(const std::vector<int64_t>& order, int64_t block, torch::Device device) {
  std::vector<int64_t> rows;
  rows.reserve(order.size() * static_cast<size_t>(block));
  for (int64_t unit : order)
    for (int64_t r = 0; r < block; ++r) rows.push_back(unit * block + r);
  return torch::tensor(rows, torch::kLong).to(device);
}

void reorder(torch::Tensor& param, int64_t dim, const torch::Tensor& index) {
  if (param.defined()) param.copy_(param.index_select(dim, index));
}

}  // namespace

void permute_units(TransformerImpl& model, const UnitOrder& order) {
  const auto& c = model.config();
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  if (order.mlp.size() != layers || order.kv_groups.size() != layers)
    fail("unit order", "has " + std::to_string(order.mlp.size()) + " MLP and " +
                           std::to_string(order.kv_groups.size()) +
                           " attention layers, model has " + std::to_string(layers));
  torch::NoGradGuard no_grad;
  const auto device = model.device();
  const int64_t hd = c.head_dim();
  for (size_t l = 0; l < layers; ++l) {
    const auto i = static_cast<int64_t>(l);
    auto layer = model.model->layers->ptr<DecoderLayerImpl>(i);
    check_permutation(order.mlp[l], c.layer_mlp(i), "layer " + std::to_string(l) + " MLP");
    check_permutation(order.kv_groups[l], c.layer_kv_heads(i),
                      "layer " + std::to_string(l) + " KV groups");

    auto& mlp = *layer->mlp;
    const auto neurons = block_rows(order.mlp[l], 1, device);
    if (mlp.gate_proj) reorder(mlp.gate_proj->weight, 0, neurons);
    reorder(mlp.up_proj->weight, 0, neurons);
    reorder(mlp.up_proj->bias, 0, neurons);
    reorder(mlp.down_proj->weight, 1, neurons);

    // A KV group = hd rows of k and v, and group_size * hd rows of q (its query heads).
    auto& attn = *layer->self_attn;
    const auto kv_rows = block_rows(order.kv_groups[l], hd, device);
    const auto q_rows = block_rows(order.kv_groups[l], hd * c.group_size(), device);
    for (auto* proj : {&attn.k_proj, &attn.v_proj}) {
      reorder((*proj)->weight, 0, kv_rows);
      reorder((*proj)->bias, 0, kv_rows);
    }
    reorder(attn.q_proj->weight, 0, q_rows);
    reorder(attn.q_proj->bias, 0, q_rows);
    reorder(attn.o_proj->weight, 1, q_rows);
  }
}

UnitOrder random_unit_order(const ModelConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto shuffled = [&](int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), 0);
    std::shuffle(v.begin(), v.end(), rng);
    return v;
  };
  UnitOrder order;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    order.mlp.push_back(shuffled(config.layer_mlp(l)));
    order.kv_groups.push_back(shuffled(config.layer_kv_heads(l)));
  }
  return order;
}

}  // namespace flextron::model
