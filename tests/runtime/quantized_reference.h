// The reference a quantized engine is checked against: the same model with every matrix the
// engine quantizes (q/k/v/o/gate/up/down, the embedding and the LM head) replaced by its
// quantize -> dequantize image, row by row along the input dimension, with core/quant_blocks.h's
// llama.cpp formulas (a last partial block zero-padded). Its torch forward is what the engine's
// exact path must reproduce.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/quant_blocks.h"
#include "model/transformer.h"
#include "runtime/quant_kernels.h"

namespace flextron::testing {

inline torch::Tensor quantize_dequantize_rows(const torch::Tensor& w, runtime::qk::WeightFormat f) {
  auto src = w.detach().to(torch::kFloat).contiguous();
  const int64_t rows = src.size(0), cols = src.size(1), padded = (cols + 31) / 32 * 32;
  const auto type =
      f == runtime::qk::WeightFormat::Q8_0 ? quant::GgmlType::Q8_0 : quant::GgmlType::Q4_0;
  auto out = torch::empty_like(src);
  std::vector<float> row(static_cast<size_t>(padded)), back(row.size());
  std::vector<uint8_t> blocks(static_cast<size_t>(quant::bytes_of(type, padded)));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(row.begin(), row.end(), 0.0f);
    std::copy(src[r].data_ptr<float>(), src[r].data_ptr<float>() + cols, row.begin());
    if (type == quant::GgmlType::Q8_0)
      quant::quantize_q8_0(row.data(), blocks.data(), padded);
    else
      quant::quantize_q4_0_fitted(row.data(), blocks.data(), padded);
    quant::dequantize(type, blocks.data(), back.data(), padded);
    std::copy(back.begin(), back.begin() + cols, out[r].data_ptr<float>());
  }
  return out;
}

// A copy of `m` whose quantized matrices are their dequantized images.
inline model::Transformer dequantized_copy(model::TransformerImpl& m, runtime::qk::WeightFormat f) {
  model::Transformer copy(m.config());
  torch::NoGradGuard no_grad;
  auto source = m.named_parameters();
  for (auto& item : copy->named_parameters()) {
    const auto& name = item.key();
    auto value = source[name].detach();
    const bool quantized = value.dim() == 2 && name.find("embed_positions") == std::string::npos;
    item.value().copy_(quantized ? quantize_dequantize_rows(value, f) : value);
  }
  copy->eval();
  return copy;
}

}  // namespace flextron::testing
