#include "serve/schedule.h"

#include <algorithm>

#include "model/extract.h"

namespace flextron::serve {

std::vector<size_t> select_step_rows(const std::vector<ScheduleCandidate>& candidates, double tau,
                                     int64_t max_rows) {
  std::vector<size_t> rows;
  if (candidates.empty() || max_rows < 1) return rows;
  const ScheduleCandidate& first = candidates.front();
  double w_max = 0.0;
  for (const auto& c : candidates) w_max = std::max(w_max, c.weight);
  const double limit = first.charge + tau * (first.weight + w_max);
  for (size_t j = 0; j < candidates.size() && static_cast<int64_t>(rows.size()) < max_rows; ++j) {
    const auto& c = candidates[j];
    if (j == 0 || tau <= 0.0 || c.weight <= first.weight || c.charge + tau * c.weight <= limit)
      rows.push_back(j);
  }
  return rows;
}

std::vector<double> step_shares(const std::vector<double>& weights, double seconds) {
  double total = 0.0;
  for (double w : weights) total += w;
  std::vector<double> shares;
  for (double w : weights)
    shares.push_back(total > 0.0 ? seconds * w / total
                                 : seconds / static_cast<double>(weights.size()));
  return shares;
}

double decode_weight(const model::ModelConfig& config, const model::Architecture& arch) {
  const auto reads = [&](const model::Architecture& a) {
    double n = static_cast<double>(config.vocab_size) * static_cast<double>(config.hidden_size);
    for (const auto& w : a)
      n += static_cast<double>(model::layer_attention_parameters(config, w.kv_groups) +
                               model::layer_mlp_parameters(config, w.mlp));
    return n;
  };
  const auto full = model::full_architecture(config);
  return reads(arch.empty() ? full : arch) / reads(full);
}

}  // namespace flextron::serve
