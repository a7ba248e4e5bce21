#include "model/rope_factors.h"

#include <algorithm>
#include <cmath>

namespace flextron::model {

namespace {

// inv_freq_i = theta^(-2i/head_dim), unscaled, float64.
std::vector<double> base_frequencies(const ModelConfig& c) {
  std::vector<double> f;
  const int64_t hd = c.head_dim();
  for (int64_t i = 0; i < hd / 2; ++i)
    f.push_back(std::pow(c.rope_theta, -static_cast<double>(2 * i) / static_cast<double>(hd)));
  return f;
}

bool matches(const ModelConfig& base, const RopeScaling& scaling,
             const std::vector<double>& factors) {
  ModelConfig c = base;
  c.rope_scaling = scaling;
  if (!(scaling.high_freq_factor > scaling.low_freq_factor) || !(scaling.low_freq_factor > 0) ||
      scaling.original_max_position_embeddings <= 0)
    return false;
  const auto got = rope_frequency_factors(c);
  for (size_t i = 0; i < got.size(); ++i)
    if (std::abs(got[i] - factors[i]) > 1e-5 * factors[i]) return false;
  return true;
}

}  // namespace

std::vector<double> rope_frequency_factors(const ModelConfig& c) {
  const auto base = base_frequencies(c);
  std::vector<double> out(base.size(), 1.0);
  const auto& r = c.rope_scaling;
  if (r.kind == RopeScaling::Kind::Linear) std::fill(out.begin(), out.end(), r.factor);
  if (r.kind != RopeScaling::Kind::Llama3) return out;
  // The rule of RopeScaling (config.h), as a divisor: 1 / ((1 - s) / factor + s).
  const double context = static_cast<double>(r.original_max_position_embeddings);
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelen = 2 * M_PI / base[i];
    if (wavelen < context / r.high_freq_factor) continue;
    if (wavelen > context / r.low_freq_factor) {
      out[i] = r.factor;
      continue;
    }
    const double s =
        (context / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    out[i] = 1.0 / ((1 - s) / r.factor + s);
  }
  return out;
}

std::optional<RopeScaling> llama3_scaling_from_factors(const ModelConfig& config,
                                                       const std::vector<double>& factors) {
  const auto base = base_frequencies(config);
  if (factors.size() != base.size()) return std::nullopt;
  const double factor = *std::max_element(factors.begin(), factors.end());
  if (!(factor > 1)) return std::nullopt;
  // The blended band: s_i = (1/f_i - 1/factor) / (1 - 1/factor) in (0, 1), and
  // s_i = (L / w_i - low) / (high - low) with w_i = 2 pi / inv_freq_i.
  std::vector<std::pair<double, double>> band;  // (w_i, s_i)
  for (size_t i = 0; i < base.size(); ++i) {
    const double s = (1 / factors[i] - 1 / factor) / (1 - 1 / factor);
    if (s > 1e-6 && s < 1 - 1e-6) band.emplace_back(2 * M_PI / base[i], s);
  }
  RopeScaling r;
  r.kind = RopeScaling::Kind::Llama3;
  r.factor = factor;
  for (int p = 8; p <= 24; ++p) {
    const double L = std::ldexp(1.0, p);
    r.original_max_position_embeddings = static_cast<int64_t>(L);
    if (band.size() >= 2) {
      const auto& [wa, sa] = band.front();
      const auto& [wb, sb] = band.back();
      const double span = (L / wa - L / wb) / (sa - sb);
      r.low_freq_factor = L / wa - sa * span;
      r.high_freq_factor = r.low_freq_factor + span;
    } else {
      r.low_freq_factor = 1.0;
      r.high_freq_factor = band.empty() ? 4.0 : 1.0 + (L / band[0].first - 1.0) / band[0].second;
    }
    if (matches(config, r, factors)) return r;
  }
  return std::nullopt;
}

}  // namespace flextron::model
