#include "runtime/quant_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/quant_blocks.h"

namespace flextron::runtime::qk {

const char* format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32:
      return "f32";
    case WeightFormat::Q8_0:
      return "q8_0";
    case WeightFormat::Q4_0:
      return "q4_0";
  }
  return "?";
}

WeightFormat parse_format(const std::string& name, const std::string& where) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (auto f : {WeightFormat::F32, WeightFormat::Q8_0, WeightFormat::Q4_0})
    if (lower == format_name(f)) return f;
  fail(where, "unknown weight format '" + name + "' (expected f32, q8_0 or q4_0)");
}

WeightFormat resolve_format(const std::string& requested, const std::string& stored,
                            const std::string& where) {
  return parse_format(requested == "auto" ? stored : requested, where);
}

int64_t block_bytes(WeightFormat format) {
  switch (format) {
    case WeightFormat::Q8_0:
      return sizeof(quant::BlockQ8_0);
    case WeightFormat::Q4_0:
      return sizeof(quant::BlockQ4_0);
    case WeightFormat::F32:
      break;
  }
  return 0;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512Vnni:
      return "avx512vnni";
  }
  return "?";
}

bool isa_supported(Isa isa) {
#if defined(__x86_64__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  switch (isa) {
    case Isa::Scalar:
      return true;
    case Isa::Avx2:
      return avx2;
    case Isa::Avx512Vnni:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::Scalar;
#endif
}

Isa best_isa() {
  static const Isa best = [] {
    Isa isa = Isa::Scalar;
    for (auto candidate : {Isa::Avx2, Isa::Avx512Vnni})
      if (isa_supported(candidate)) isa = candidate;
    if (const char* forced = std::getenv("FLEXTRON_QUANT_ISA"))
      for (auto candidate : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni})
        if (std::strcmp(forced, isa_name(candidate)) == 0 && isa_supported(candidate))
          isa = candidate;
    return isa;
  }();
  return best;
}

// ---- The scalar reference: the formulas of quant_kernels.h as written. ----

namespace reference {

// Weight b of a block as its signed integer (Q8_0: q; Q4_0: nibble - 8).
int weight_value(WeightFormat format, const uint8_t* block, int k) {
  if (format == WeightFormat::Q8_0) return static_cast<int8_t>(block[2 + k]);
  const uint8_t byte = block[2 + (k % 16)];
  return (k < 16 ? byte & 15 : byte >> 4) - 8;
}

float block_scale(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, sizeof h);
  return quant::fp16_to_fp32(h);
}

float quantize_block(const float* x, int8_t* q) {
  float amax = 0.0f;
  for (int k = 0; k < kBlock; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int k = 0; k < kBlock; ++k) q[k] = static_cast<int8_t>(std::round(x[k] * id));
  return d;
}

void gemm_rows(WeightFormat format, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t nb,
               const QuantizedActivations& x, int64_t b0, int64_t n, float* y, int64_t ldy,
               bool accumulate) {
  const int64_t bb = block_bytes(format);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < rows; ++i) {
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* block = w + i * row_bytes + b * bb;
        const int64_t at = j * x.ld_blocks + b0 + b;
        const int8_t* xq = x.q + at * kBlock;
        int32_t s = 0;  // exact: |s| <= 32 * 128 * 127
        for (int k = 0; k < kBlock; ++k) s += weight_value(format, block, k) * xq[k];
        sum += block_scale(block) * x.d[at] * static_cast<float>(s);
      }
      float& out = y[j * ldy + i];
      out = accumulate ? out + sum : sum;
    }
}

void dequantize(WeightFormat format, const uint8_t* src, int64_t nb, float* dst) {
  const int64_t bb = block_bytes(format);
  for (int64_t b = 0; b < nb; ++b, src += bb)
    for (int k = 0; k < kBlock; ++k)
      dst[b * kBlock + k] = static_cast<float>(weight_value(format, src, k)) * block_scale(src);
}

}  // namespace reference

// ---- The SIMD paths (quant_kernels_simd.inc, compiled once per instruction set). ----

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#define FLEXTRON_QK_VNNI 0
#include "runtime/quant_kernels_simd.inc"
#undef FLEXTRON_QK_VNNI
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
// GCC 12's AVX-512 intrinsics fill unused lanes with _mm512_undefined_*(), a self-initialised
// variable that -Wuninitialized reports at every use: not a defect of this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
namespace vnni {
#define FLEXTRON_QK_VNNI 1
#include "runtime/quant_kernels_simd.inc"
#undef FLEXTRON_QK_VNNI
}  // namespace vnni
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

namespace {

void check_quantized(WeightFormat format, const char* what) {
  if (format == WeightFormat::F32)
    fail("quant kernels", std::string(what) + " needs a block format");
}

}  // namespace

void quantize_weights(WeightFormat format, const float* x, int64_t count, uint8_t* dst) {
  check_quantized(format, "quantize_weights");
  const int64_t whole = count / kBlock * kBlock;
  auto run = [&](const float* src, int64_t n, uint8_t* out) {
    if (format == WeightFormat::Q8_0)
      quant::quantize_q8_0(src, out, n);
    else
      quant::quantize_q4_0_fitted(src, out, n);
  };
  if (whole > 0) run(x, whole, dst);
  if (whole < count) {
    float tail[kBlock] = {};
    std::copy(x + whole, x + count, tail);
    run(tail, kBlock, dst + whole / kBlock * block_bytes(format));
  }
}

void dequantize_weights(WeightFormat format, const uint8_t* src, int64_t nb, float* dst, Isa isa) {
  check_quantized(format, "dequantize_weights");
#if defined(__x86_64__)
  if (isa == Isa::Avx512Vnni) return vnni::dequantize(format, src, nb, dst);
  if (isa == Isa::Avx2) return avx2::dequantize(format, src, nb, dst);
#endif
  reference::dequantize(format, src, nb, dst);
}

void quantize_activations(const float* x, int64_t ldx, int64_t n, int64_t first, int64_t count,
                          const QuantizedActivations& out, Isa isa) {
  if (count <= 0 || n <= 0) return;  // (an empty share may start anywhere)
  if (first % kBlock != 0)
    fail("quant kernels",
         "activations start at " + std::to_string(first) + ", not a multiple of 32");
  const int64_t nb = blocks_for(count), b0 = first / kBlock;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t b = 0; b < nb; ++b) {
      const float* src = x + j * ldx + first + b * kBlock;
      float padded[kBlock] = {};
      if ((b + 1) * kBlock > count) {  // the last, partial block
        std::copy(src, src + (count - b * kBlock), padded);
        src = padded;
      }
      const int64_t at = j * out.ld_blocks + b0 + b;
      int8_t* q = out.q + at * kBlock;
#if defined(__x86_64__)
      if (isa == Isa::Avx512Vnni) {
        out.d[at] = vnni::quantize_block(src, q);
        continue;
      }
      if (isa == Isa::Avx2) {
        out.d[at] = avx2::quantize_block(src, q);
        continue;
      }
#endif
      out.d[at] = reference::quantize_block(src, q);
    }
}

void gemm_rows(WeightFormat format, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t nb,
               const QuantizedActivations& x, int64_t b0, int64_t n, float* y, int64_t ldy,
               bool accumulate, Isa isa) {
  check_quantized(format, "gemm_rows");
  if (rows <= 0 || n <= 0) return;
#if defined(__x86_64__)
  if (isa == Isa::Avx512Vnni)
    return vnni::gemm_rows(format, w, row_bytes, rows, nb, x, b0, n, y, ldy, accumulate);
  if (isa == Isa::Avx2)
    return avx2::gemm_rows(format, w, row_bytes, rows, nb, x, b0, n, y, ldy, accumulate);
#endif
  reference::gemm_rows(format, w, row_bytes, rows, nb, x, b0, n, y, ldy, accumulate);
}

int64_t panel_offset(WeightFormat format, int64_t rows, int64_t nb, int64_t row, int64_t b) {
  const int64_t bb = block_bytes(format), p = b / kPanelBlocks;
  const int64_t width = std::min(kPanelBlocks, nb - p * kPanelBlocks);
  return (p * kPanelBlocks * rows + row * width + (b - p * kPanelBlocks)) * bb;
}

void to_panels(WeightFormat format, const uint8_t* src, int64_t rows, int64_t nb, uint8_t* dst) {
  const int64_t bb = block_bytes(format);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b)
      std::memcpy(dst + panel_offset(format, rows, nb, r, b), src + (r * nb + b) * bb,
                  static_cast<size_t>(bb));
}

void gemm_panels(WeightFormat format, const uint8_t* w, int64_t rows, int64_t nb, int64_t b0,
                 int64_t b1, const QuantizedActivations& x, int64_t n, float* y, int64_t ldy,
                 bool accumulate, Isa isa) {
  check_quantized(format, "gemm_panels");
  b1 = std::min(b1, nb);
  if (b0 >= b1) {
    if (!accumulate)
      for (int64_t j = 0; j < n; ++j) std::fill(y + j * ldy, y + j * ldy + rows, 0.0f);
    return;
  }
  const int64_t bb = block_bytes(format);
  for (int64_t p = b0 / kPanelBlocks; p * kPanelBlocks < b1; ++p) {
    const int64_t first = p * kPanelBlocks, width = std::min(kPanelBlocks, nb - first);
    const int64_t lo = std::max(b0, first), hi = std::min(b1, first + width);
    const uint8_t* panel = w + first * rows * bb;
    gemm_rows(format, panel + (lo - first) * bb, width * bb, rows, hi - lo, x, lo, n, y, ldy,
              accumulate || lo != b0, isa);
  }
}

}  // namespace flextron::runtime::qk
