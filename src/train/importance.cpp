#include "train/importance.h"

#include <algorithm>
#include <numeric>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace flextron::train {

namespace {

// Running sums over calibration sequences of a per-sequence score vector: enough for all three
// aggregations (sum for mean, sum of squares for L2 and variance).
struct Accumulator {
  torch::Tensor sum, sum_sq;
  void add(const torch::Tensor& per_sequence) {  // [B, units]
    auto x = per_sequence.to(torch::kCPU, torch::kDouble);
    if (!sum.defined()) {
      sum = torch::zeros({x.size(1)}, torch::kDouble);
      sum_sq = torch::zeros({x.size(1)}, torch::kDouble);
    }
    sum += x.sum(0);
    sum_sq += x.pow(2).sum(0);
  }
  torch::Tensor result(Aggregation a, int64_t n) const {
    const double count = static_cast<double>(n);
    switch (a) {
      case Aggregation::L2:
        return sum_sq.sqrt();
      case Aggregation::Mean:
        return sum / count;
      case Aggregation::Variance:
        return (sum_sq / count - (sum / count).pow(2)).clamp_min(0.0);
    }
    return sum_sq.sqrt();
  }
};

class ImportanceObserver : public model::ActivationObserver {
 public:
  explicit ImportanceObserver(size_t layers) : mlp_(layers), heads_(layers) {}
  void mlp_hidden(int64_t layer, const torch::Tensor& act) override {
    mlp_[static_cast<size_t>(layer)].add(act.abs().to(torch::kFloat).mean(1));
  }
  void attention_heads(int64_t layer, const torch::Tensor& heads) override {
    heads_[static_cast<size_t>(layer)].add(heads.to(torch::kFloat).norm(2, -1).mean(1));
  }
  std::vector<Accumulator> mlp_, heads_;
};

// Removes the observer however the forward pass ends.
struct ObserverGuard {
  model::TransformerImpl& model;
  ~ObserverGuard() { model.set_observer(nullptr); }
};

std::vector<int64_t> descending(const torch::Tensor& scores) {
  std::vector<int64_t> idx(static_cast<size_t>(scores.numel()));
  std::iota(idx.begin(), idx.end(), 0);
  auto s = scores.contiguous();
  const double* p = s.data_ptr<double>();
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  return idx;
}

std::vector<double> to_vector(const torch::Tensor& t) {
  auto c = t.contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

}  // namespace

Aggregation parse_aggregation(const std::string& name) {
  if (name == "l2") return Aggregation::L2;
  if (name == "mean") return Aggregation::Mean;
  if (name == "variance") return Aggregation::Variance;
  fail("--aggregation", "unknown aggregation \"" + name + "\" (use l2, mean or variance)");
}

std::string aggregation_name(Aggregation aggregation) {
  switch (aggregation) {
    case Aggregation::L2:
      return "l2";
    case Aggregation::Mean:
      return "mean";
    case Aggregation::Variance:
      return "variance";
  }
  return "l2";
}

ImportanceScores score_importance(model::TransformerImpl& model, const torch::Tensor& windows,
                                  const ImportanceOptions& options) {
  if (windows.dim() != 2 || windows.size(0) < 1 || windows.size(1) < 1)
    fail("importance", "calibration windows must be a non-empty [N, T] tensor");
  if (options.batch < 1) fail("importance", "batch must be positive");
  const auto& c = model.config();
  const auto layers = static_cast<size_t>(c.num_hidden_layers);
  ImportanceObserver observer(layers);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  {
    ObserverGuard guard{model};
    model.set_observer(&observer);
    const int64_t n = windows.size(0);
    for (int64_t b = 0; b < n; b += options.batch) {
      const int64_t size = std::min(options.batch, n - b);
      model.forward(windows.narrow(0, b, size).to(model.device()));
      if (options.on_progress) options.on_progress(b + size, n);
    }
  }
  model.train(was_training);

  ImportanceScores s;
  s.aggregation = options.aggregation;
  s.sequences = windows.size(0);
  s.seq_len = windows.size(1);
  for (size_t l = 0; l < layers; ++l) {
    s.mlp.push_back(observer.mlp_[l].result(options.aggregation, s.sequences));
    auto heads = observer.heads_[l].result(options.aggregation, s.sequences);
    s.heads.push_back(heads);
    s.kv_groups.push_back(heads.view({-1, c.group_size()}).sum(1));
  }
  return s;
}

model::UnitOrder order_by_importance(const ImportanceScores& scores) {
  model::UnitOrder order;
  for (size_t l = 0; l < scores.mlp.size(); ++l) {
    order.mlp.push_back(descending(scores.mlp[l]));
    order.kv_groups.push_back(descending(scores.kv_groups[l]));
  }
  return order;
}

RankResult rank_by_importance(model::TransformerImpl& model, const torch::Tensor& windows,
                              const ImportanceOptions& options) {
  RankResult r;
  r.scores = score_importance(model, windows, options);
  r.order = order_by_importance(r.scores);
  model::permute_units(model, r.order);
  return r;
}

torch::Tensor calibration_windows(const std::vector<int64_t>& tokens, int64_t seq_len,
                                  int64_t samples, const std::string& where) {
  if (seq_len < 1) fail(where, "sequence length must be positive");
  if (samples < 1) fail(where, "the number of samples must be positive");
  const auto available = static_cast<int64_t>(tokens.size()) / seq_len;
  if (available < 1)
    fail(where, "text has " + std::to_string(tokens.size()) +
                    " tokens, less than one calibration window of " + std::to_string(seq_len));
  const int64_t n = std::min(samples, available);
  auto all = torch::tensor(tokens, torch::kLong);
  auto windows = torch::empty({n, seq_len}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t w = i * available / n;  // evenly spread over the available windows
    windows[i].copy_(all.narrow(0, w * seq_len, seq_len));
  }
  return windows;
}

nlohmann::json importance_to_json(const ImportanceScores& scores, const model::UnitOrder& order) {
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < scores.mlp.size(); ++l) {
    layers.push_back({{"layer", l},
                      {"mlp_scores", to_vector(scores.mlp[l])},
                      {"mlp_order", order.mlp[l]},
                      {"head_scores", to_vector(scores.heads[l])},
                      {"kv_group_scores", to_vector(scores.kv_groups[l])},
                      {"kv_group_order", order.kv_groups[l]}});
  }
  return {{"aggregation", aggregation_name(scores.aggregation)},
          {"sequences", scores.sequences},
          {"seq_len", scores.seq_len},
          {"note",
           "scores are in the original unit order; *_order[i] is the original index of "
           "the unit now at position i"},
          {"layers", layers}};
}

}  // namespace flextron::train
