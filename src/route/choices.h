// The discrete decisions a router makes, laid out as vectors. Per layer there is one MLP choice
// (an index into the elastic space's neuron widths) and one attention choice (an index into its
// KV-group counts). A whole architecture is the concatenation, layer by layer, of the two one-hot
// segments [mlp choices of layer 0 | attention choices of layer 0 | mlp of layer 1 | ...]: the
// layout of the static router's logits and of the surrogate model's input.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "model/elastic_space.h"
#include "model/transformer.h"
#include "route/latency.h"

namespace flextron::route {

struct Segment {
  int64_t offset = 0;
  int64_t size = 0;
};

class ChoiceLayout {
 public:
  explicit ChoiceLayout(const model::ElasticSpace& space);

  int64_t layers() const { return static_cast<int64_t>(mlp_.size()); }
  int64_t size() const { return size_; }
  const Segment& mlp_segment(int64_t layer) const { return mlp_[static_cast<size_t>(layer)]; }
  const Segment& attn_segment(int64_t layer) const { return attn_[static_cast<size_t>(layer)]; }
  const model::ElasticSpace& space() const { return space_; }

  // [size] one-hot of `arch` (empty: full), float32 on the CPU.
  torch::Tensor encode(const model::Architecture& arch) const;
  // The architecture of the largest entry of every segment of `scores` ([size]).
  model::Architecture decode(const torch::Tensor& scores) const;
  // Choice indices <-> architecture.
  std::vector<int64_t> indices(const model::Architecture& arch) const;  // [2 * layers]
  model::Architecture from_indices(const std::vector<int64_t>& indices) const;

  // [size]: the latency table's reference milliseconds of every choice (what a one-hot selects).
  torch::Tensor cost_ms(const LatencyTable& table) const;

 private:
  model::ElasticSpace space_;
  std::vector<Segment> mlp_, attn_;
  int64_t size_ = 0;
};

// Straight-through Gumbel-softmax over the last dimension of `logits`: the forward value is the
// one-hot of argmax(logits + Gumbel noise) (of logits alone when `noise` is false), the gradient
// is that of softmax((logits + noise) / tau).
torch::Tensor gumbel_softmax_hard(const torch::Tensor& logits, double tau, bool noise);

// [choices, widest]: row c has ones on the first widths[c] columns. A (straight-through) choice
// vector y times this matrix is the mask of neurons the chosen prefix keeps; with soft y it is
// each neuron's probability of being kept, so y @ inclusion applied to the activations is the
// exact expected output of the nested experts (the down projection is linear).
torch::Tensor inclusion_matrix(const std::vector<int64_t>& widths);

// Applies gumbel_softmax_hard to every segment of `logits` ([N, size]) and concatenates.
torch::Tensor sample_choices(const ChoiceLayout& layout, const torch::Tensor& logits, double tau,
                             bool noise);

}  // namespace flextron::route
