// Shared by the router tests: stories260K ranked by importance, a loss oracle on fixed sequences,
// and a latency table whose entries are known exactly (so routing tests do not depend on timing).
#pragma once

#include <vector>

#include <torch/nn/functional/loss.h>

#include "model/elastic_space.h"
#include "route/latency.h"
#include "route/static_router.h"
#include "stories260k.h"
#include "train/importance.h"

namespace flextron::testing {

struct RankedStories {
  model::Transformer model{nullptr};
  model::ElasticSpace space;
  torch::Tensor sequences;  // [8, 65] held-out sequences for the oracle
};

inline RankedStories ranked_stories() {
  RankedStories r;
  r.model = load_stories260k();
  train::rank_by_importance(*r.model, sample_sequences(*r.model, 16, 128, 3));
  r.space = model::default_elastic_space(r.model->config());
  r.space.ranked = true;
  r.sequences = sample_sequences(*r.model, 8, 65, 11);
  return r;
}

// Mean next-token cross-entropy of `model` on `sequences` at each architecture.
inline route::LossOracle sequence_oracle(model::TransformerImpl& model, torch::Tensor sequences) {
  return [&model, sequences](const std::vector<model::Architecture>& archs) {
    torch::NoGradGuard no_grad;
    std::vector<double> out;
    const int64_t t = sequences.size(1) - 1;
    for (const auto& a : archs) {
      auto logits = model.forward(sequences.narrow(1, 0, t), nullptr, &a);
      out.push_back(torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                         sequences.narrow(1, 1, t).reshape({-1}))
                        .item<double>());
    }
    return out;
  };
}

// Fixed 0.2 ms, MLP entries 0.1 ms * width / full, attention 0.05 ms * groups / full: every
// prediction is known in closed form.
inline route::LatencyTable synthetic_table(const model::ModelConfig& config,
                                           const model::ElasticSpace& space) {
  route::LatencyTable t;
  t.model = route::describe_model(config, space);
  t.hardware = {{"cpu", "synthetic"}};
  t.contexts = {64};
  t.prefill_tokens = 16;
  t.mlp_widths = space.mlp;
  t.kv_groups = space.kv_groups;
  t.fixed_decode_ms = {0.2};
  t.decode_scale = {1.0};
  t.fixed_prefill_ms = 0.01;
  for (size_t l = 0; l < space.mlp.size(); ++l) {
    std::vector<double> mlp, mlp_prefill, attn_prefill;
    std::vector<std::vector<double>> attn;
    for (int64_t w : space.mlp[l]) {
      mlp.push_back(0.1 * static_cast<double>(w) / static_cast<double>(space.mlp[l].back()));
      mlp_prefill.push_back(mlp.back() / 10);
    }
    for (int64_t g : space.kv_groups[l]) {
      attn.push_back(
          {0.05 * static_cast<double>(g) / static_cast<double>(space.kv_groups[l].back())});
      attn_prefill.push_back(attn.back()[0] / 10);
    }
    t.mlp_decode_ms.push_back(mlp);
    t.mlp_prefill_ms.push_back(mlp_prefill);
    t.attn_decode_ms.push_back(attn);
    t.attn_prefill_ms.push_back(attn_prefill);
  }
  return t;
}

}  // namespace flextron::testing
