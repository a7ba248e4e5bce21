// Learning rate: linear warm-up to the peak, then cosine decay to min_ratio * peak.
//   lr(s) = peak * (s + 1) / warmup                                   for s < warmup
//   lr(s) = peak * (min + (1 - min) * (1 + cos(pi * p)) / 2),  p = (s - warmup) / (total - warmup)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace flextron::train {

inline double cosine_lr(int64_t step, int64_t total_steps, int64_t warmup_steps, double peak,
                        double min_ratio) {
  if (step < warmup_steps)
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace flextron::train
