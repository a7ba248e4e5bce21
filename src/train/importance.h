// Activation-based importance of MLP neurons and attention KV groups (FLEXTRON.md section 2):
// forward calibration sequences through the trained model and score each unit by the size of
// what it contributes.
//   neuron i of layer l: a_s,i = mean over positions t of |x_s,t,i|, x = the activation entering
//     down_proj, for each calibration sequence s;
//   query head j: a_s,j = mean over positions of ||o_s,t,j||_2, o = the head's attention output;
//   then over sequences: "l2" sqrt(sum_s a_s^2) (default, the best in NVIDIA's Minitron study),
//   "mean" (1/S) sum_s a_s, or "variance" (1/S) sum_s (a_s - mean)^2.
// A KV group scores the sum of its query heads' scores.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json_fwd.hpp>

#include "model/permutation.h"
#include "model/transformer.h"

namespace flextron::train {

enum class Aggregation { L2, Mean, Variance };
Aggregation parse_aggregation(const std::string& name);  // "l2", "mean", "variance"
std::string aggregation_name(Aggregation aggregation);

struct ImportanceOptions {
  Aggregation aggregation = Aggregation::L2;
  int64_t batch = 8;  // sequences per forward
  // Called after each batch with (sequences done, total).
  std::function<void(int64_t, int64_t)> on_progress;
};

// Scores per layer (float64, CPU), in the model's current unit order.
struct ImportanceScores {
  Aggregation aggregation = Aggregation::L2;
  int64_t sequences = 0;
  int64_t seq_len = 0;
  std::vector<torch::Tensor> mlp;        // [neurons]
  std::vector<torch::Tensor> heads;      // [query heads]
  std::vector<torch::Tensor> kv_groups;  // [KV groups]
};

// windows: [N, T] int64 calibration sequences. Runs without gradients in the model's dtype;
// accumulates in float64.
ImportanceScores score_importance(model::TransformerImpl& model, const torch::Tensor& windows,
                                  const ImportanceOptions& options = {});

// Each layer's units by descending score (ties keep the original order).
model::UnitOrder order_by_importance(const ImportanceScores& scores);

// Scores, orders and permutes `model` in place (function unchanged, units now by descending
// importance). Returns the scores (in the original order) and the order applied.
struct RankResult {
  ImportanceScores scores;
  model::UnitOrder order;
};
RankResult rank_by_importance(model::TransformerImpl& model, const torch::Tensor& windows,
                              const ImportanceOptions& options = {});

// Up to `samples` non-overlapping windows of seq_len tokens, evenly spread over `tokens`, as an
// [N, seq_len] int64 tensor. Throws flextron::Error naming `where` if not even one fits.
torch::Tensor calibration_windows(const std::vector<int64_t>& tokens, int64_t seq_len,
                                  int64_t samples, const std::string& where);

// Scores and the chosen order, for inspection (importance.json).
nlohmann::json importance_to_json(const ImportanceScores& scores, const model::UnitOrder& order);

}  // namespace flextron::train
