// Reordering a layer's units (MLP neurons, attention KV groups) without changing the function the
// model computes: what importance ranking does once it has sorted the units (FLEXTRON.md
// section 2), so that every prefix is the most important sub-network of its size.
#pragma once

#include <cstdint>
#include <vector>

#include "model/transformer.h"

namespace flextron::model {

// Per layer, order[i] = the old index of the unit that moves to position i (a permutation).
struct UnitOrder {
  std::vector<std::vector<int64_t>> mlp;
  std::vector<std::vector<int64_t>> kv_groups;
};

// Permutes the weights in place. A neuron moves its gate/up rows (and bias) and its down column;
// a KV group moves its k/v rows (and biases), its query heads' q rows and their o columns, so
// RoPE's pairing inside each head is untouched. Throws flextron::Error if `order` is not a
// permutation of every layer's units.
void permute_units(TransformerImpl& model, const UnitOrder& order);

// A uniformly random order per layer: the baseline that importance ranking must beat.
UnitOrder random_unit_order(const ModelConfig& config, uint64_t seed);

}  // namespace flextron::model
