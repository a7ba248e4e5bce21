// Llama 3's rope_scaling as llama.cpp stores it: GGUF has no llama3 keys, its converter writes
// `rope_freqs.weight`, one divisor per frequency (inv_freq_i' = inv_freq_i / factor_i). These
// convert between the two forms.
#pragma once

#include <optional>
#include <vector>

#include "model/config.h"

namespace flextron::model {

// The per-frequency divisors that config.rope_scaling (linear or llama3) applies, in float64:
// [head_dim / 2] values >= 1.
std::vector<double> rope_frequency_factors(const ModelConfig& config);

// The llama3 parameters (factor, low/high_freq_factor, original context) that reproduce
// `factors` on `config`'s frequencies within a relative 1e-5, if any: the factor is the largest
// divisor; the blended band fixes the rest (two points or more: solved; one or none: the
// original context tried at powers of two with low_freq_factor 1, as Llama 3 uses). nullopt
// when no llama3 rule fits (then the file's scaling is not one these blocks compute).
std::optional<RopeScaling> llama3_scaling_from_factors(const ModelConfig& config,
                                                       const std::vector<double>& factors);

}  // namespace flextron::model
