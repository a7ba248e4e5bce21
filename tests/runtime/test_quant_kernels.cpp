// The quantized block kernels (runtime/quant_kernels.h) against their scalar reference and
// against llama.cpp's block formulas written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/quant_blocks.h"
#include "runtime/quant_kernels.h"

namespace qk = flextron::runtime::qk;
using qk::Isa;
using qk::WeightFormat;

namespace {

std::vector<float> random_values(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = normal(gen);
  return v;
}

std::vector<Isa> simd_paths() {
  std::vector<Isa> paths;
  for (auto isa : {Isa::Avx2, Isa::Avx512Vnni})
    if (qk::isa_supported(isa)) paths.push_back(isa);
  return paths;
}

// Quantized weights [rows, cols] (row-major blocks) and their bytes per row.
struct Weights {
  std::vector<uint8_t> bytes;
  int64_t nb, row_bytes;
};
Weights quantize_matrix(WeightFormat f, const std::vector<float>& w, int64_t rows, int64_t cols) {
  Weights out;
  out.nb = qk::blocks_for(cols);
  out.row_bytes = out.nb * qk::block_bytes(f);
  out.bytes.resize(static_cast<size_t>(rows * out.row_bytes));
  for (int64_t r = 0; r < rows; ++r)
    qk::quantize_weights(f, w.data() + r * cols, cols, out.bytes.data() + r * out.row_bytes);
  return out;
}

struct Activations {
  std::vector<int8_t> q;
  std::vector<float> d;
  qk::QuantizedActivations view() {
    return {q.data(), d.data(), static_cast<int64_t>(d.size()) / n};
  }
  int64_t n;
};
Activations quantize_rows(const std::vector<float>& x, int64_t n, int64_t cols, Isa isa) {
  Activations a;
  a.n = n;
  const int64_t nb = qk::blocks_for(cols);
  a.q.assign(static_cast<size_t>(n * nb * qk::kBlock), 0);
  a.d.assign(static_cast<size_t>(n * nb), 0.0f);
  qk::quantize_activations(x.data(), cols, n, 0, cols, a.view(), isa);
  return a;
}

float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return flextron::quant::fp16_to_fp32(h);
}

}  // namespace

// Q8_0 blocks (as the runtime quantizes them) and Q4_0 blocks of llama.cpp's formula (the
// runtime's are fitted: quantize_q4_0_fitted) of fixed inputs: Q8_0 d = amax / 127,
// q = round(x / d); Q4_0 d = max / -8 (max the element of largest magnitude, signed),
// q = min(15, (int)(x / d + 8.5)), element k < 16 in the low nibble of byte k.
TEST(QuantKernels, WeightBlocksFollowLlamaCppFormulas) {
  std::vector<float> x(32);
  for (int k = 0; k < 32; ++k) x[k] = static_cast<float>(k - 12) * 0.25f;  // -3.0 ... 4.75
  uint8_t q8[34], q4[18];
  qk::quantize_weights(WeightFormat::Q8_0, x.data(), 32, q8);
  flextron::quant::quantize_q4_0(x.data(), q4, 32);  // the formula (the runtime fits scales:)
  uint8_t fitted[18], want[18];
  qk::quantize_weights(WeightFormat::Q4_0, x.data(), 32, fitted);
  flextron::quant::quantize_q4_0_fitted(x.data(), want, 32);
  EXPECT_EQ(0, std::memcmp(fitted, want, 18));
  const float d8 = 4.75f / 127.0f;
  EXPECT_EQ(half_to_float(q8), flextron::quant::fp16_to_fp32(flextron::quant::fp32_to_fp16(d8)));
  for (int k = 0; k < 32; ++k)
    EXPECT_EQ(static_cast<int8_t>(q8[2 + k]), static_cast<int>(std::round(x[k] / d8))) << k;
  const float d4 = 4.75f / -8.0f;
  EXPECT_EQ(half_to_float(q4), flextron::quant::fp16_to_fp32(flextron::quant::fp32_to_fp16(d4)));
  for (int k = 0; k < 32; ++k) {
    const int expected = std::min(15, static_cast<int>(x[k] * (1.0f / d4) + 8.5f));
    const int nibble = k < 16 ? q4[2 + k] & 15 : q4[2 + k - 16] >> 4;
    EXPECT_EQ(nibble, expected) << k;
  }
  // Element 31 (4.75, the largest) is -8 * d: nibble 0.
  EXPECT_EQ(q4[2 + 15] >> 4, 0);
  // Dequantized: q * d and (nibble - 8) * d, on every path.
  for (auto isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
    if (!qk::isa_supported(isa)) continue;
    float out8[32], out4[32];
    qk::dequantize_weights(WeightFormat::Q8_0, q8, 1, out8, isa);
    qk::dequantize_weights(WeightFormat::Q4_0, q4, 1, out4, isa);
    for (int k = 0; k < 32; ++k) {
      EXPECT_EQ(out8[k], static_cast<float>(static_cast<int8_t>(q8[2 + k])) * half_to_float(q8));
      const int nibble = k < 16 ? q4[2 + k] & 15 : q4[2 + k - 16] >> 4;
      EXPECT_EQ(out4[k], static_cast<float>(nibble - 8) * half_to_float(q4));
    }
  }
}

// Quantizing dequantized weights gives the same blocks back (so a quantized checkpoint loaded
// as floats and quantized again is bit-exact).
TEST(QuantKernels, RequantizingDequantizedWeightsIsExact) {
  const auto x = random_values(32 * 64, 7, 0.05f);
  for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    auto w = quantize_matrix(f, x, 1, static_cast<int64_t>(x.size()));
    std::vector<float> back(x.size());
    qk::dequantize_weights(f, w.bytes.data(), w.nb, back.data(), Isa::Scalar);
    auto again = quantize_matrix(f, back, 1, static_cast<int64_t>(back.size()));
    EXPECT_EQ(w.bytes, again.bytes) << qk::format_name(f);
  }
}

// Activation blocks: every SIMD path equals the reference byte for byte, with a partial last
// block (zero-padded) and a block of zeros.
TEST(QuantKernels, ActivationQuantizationMatchesReference) {
  const int64_t n = 3, cols = 32 * 5 + 7;
  auto x = random_values(n * cols, 11, 3.0f);
  for (int64_t k = 32; k < 64; ++k) x[k] = 0.0f;  // row 0, block 1: all zero
  x[5] = 0.5f * (3.0f / 127.0f);                  // values near a rounding tie
  const auto ref = quantize_rows(x, n, cols, Isa::Scalar);
  EXPECT_EQ(ref.d[1], 0.0f);
  for (auto isa : simd_paths()) {
    const auto got = quantize_rows(x, n, cols, isa);
    EXPECT_EQ(got.q, ref.q) << qk::isa_name(isa);
    EXPECT_EQ(got.d, ref.d) << qk::isa_name(isa);
  }
  // An empty share (a thread with no neurons at a narrow width) may start anywhere.
  auto empty = quantize_rows(x, n, cols, Isa::Scalar);
  EXPECT_NO_THROW(qk::quantize_activations(x.data(), cols, n, 24, 0, empty.view()));
  EXPECT_THROW(qk::quantize_activations(x.data(), cols, n, 24, 8, empty.view()), std::exception);
  // The reference is the formula: q = round(x / d), d = amax / 127.
  float amax = 0.0f;
  for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
  EXPECT_FLOAT_EQ(ref.d[0], amax / 127.0f);
  for (int k = 0; k < 32; ++k)
    EXPECT_EQ(ref.q[k], static_cast<int8_t>(std::round(x[k] * (1.0f / (amax / 127.0f)))));
}

// The products: every path, both formats, 1..11, 16 and 29 activation rows (every tile shape
// and its remainders, the 16-row groups of long prefills with 16 + 8 + 4 + 1 activation rows),
// row counts that are not multiples of the tiles or groups, and column counts that are not
// multiples of 32; against the reference (within 1e-5 of the scale of the sums) and against a
// double-precision sum over the dequantized weights and activations (the formula itself).
TEST(QuantKernels, ProductsMatchReferenceAtEveryShape) {
  for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0})
    for (int64_t cols : {32, 96, 100, 257})
      for (int64_t rows : {1, 5, 37}) {
        const auto wf = random_values(rows * cols, static_cast<uint32_t>(rows * 131 + cols));
        auto w = quantize_matrix(f, wf, rows, cols);
        for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 16, 29}) {
          auto xf = random_values(n * cols, static_cast<uint32_t>(n + cols));
          auto x = quantize_rows(xf, n, cols, Isa::Scalar);
          // The formula in double precision.
          std::vector<float> wd(static_cast<size_t>(w.nb * 32));
          std::vector<double> exact(static_cast<size_t>(n * rows));
          for (int64_t i = 0; i < rows; ++i) {
            qk::dequantize_weights(f, w.bytes.data() + i * w.row_bytes, w.nb, wd.data(),
                                   Isa::Scalar);
            for (int64_t j = 0; j < n; ++j) {
              double s = 0.0;
              for (int64_t k = 0; k < w.nb * 32; ++k)
                s += static_cast<double>(wd[k]) * x.q[j * w.nb * 32 + k] * x.d[j * w.nb + k / 32];
              exact[j * rows + i] = s;
            }
          }
          std::vector<float> ref(static_cast<size_t>(n * rows));
          qk::gemm_rows(f, w.bytes.data(), w.row_bytes, rows, w.nb, x.view(), 0, n, ref.data(),
                        rows, false, Isa::Scalar);
          for (size_t e = 0; e < ref.size(); ++e)
            ASSERT_NEAR(ref[e], exact[e], 1e-5 * (1.0 + std::fabs(exact[e])));
          for (auto isa : simd_paths()) {
            std::vector<float> got(ref.size(), 1.0f);
            qk::gemm_rows(f, w.bytes.data(), w.row_bytes, rows, w.nb, x.view(), 0, n, got.data(),
                          rows, true, isa);  // accumulating onto 1
            for (size_t e = 0; e < ref.size(); ++e)
              ASSERT_NEAR(got[e], ref[e] + 1.0f, 1e-5 * (1.0 + std::fabs(ref[e])))
                  << qk::format_name(f) << " " << qk::isa_name(isa) << " rows " << rows << " cols "
                  << cols << " n " << n << " at " << e;
          }
        }
      }
}

// Integer block sums are exact: with d_w = d_x = 1 (weights and activations that are small
// integers), every path returns the integer dot product itself.
namespace {

void integer_block_sums_are_exact(int64_t n) {
  const int64_t cols = 64 * 3, rows = 6;
  std::mt19937 gen(3);
  std::uniform_int_distribution<int> q(-127, 127);
  // Q8_0 blocks with d = 1 and arbitrary int8 values (including -127 / 127 extremes).
  std::vector<uint8_t> w(static_cast<size_t>(rows * cols / 32 * 34));
  std::vector<int> wv(static_cast<size_t>(rows * cols));
  for (int64_t b = 0; b < rows * cols / 32; ++b) {
    const uint16_t one = flextron::quant::fp32_to_fp16(1.0f);
    std::memcpy(&w[b * 34], &one, 2);
    for (int k = 0; k < 32; ++k) {
      const int v = k == 0 ? -127 : q(gen);
      wv[b * 32 + k] = v;
      w[b * 34 + 2 + k] = static_cast<uint8_t>(static_cast<int8_t>(v));
    }
  }
  std::vector<int8_t> xq(static_cast<size_t>(n * cols));
  std::vector<float> xd(static_cast<size_t>(n * cols / 32), 1.0f);
  for (auto& v : xq) v = static_cast<int8_t>(q(gen));
  const qk::QuantizedActivations x{xq.data(), xd.data(), cols / 32};
  for (auto isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni}) {
    if (!qk::isa_supported(isa)) continue;
    std::vector<float> y(static_cast<size_t>(n * rows));
    qk::gemm_rows(WeightFormat::Q8_0, w.data(), cols / 32 * 34, rows, cols / 32, x, 0, n, y.data(),
                  rows, false, isa);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < rows; ++i) {
        int64_t s = 0;
        for (int64_t k = 0; k < cols; ++k) s += wv[i * cols + k] * xq[j * cols + k];
        EXPECT_EQ(y[j * rows + i], static_cast<float>(s)) << qk::isa_name(isa);
      }
  }
}

}  // namespace

TEST(QuantKernels, IntegerBlockSumsAreExact) {
  for (int64_t n : {5, 21})  // pair tiles, then repacked groups
    integer_block_sums_are_exact(n);
}

// Panels: a panelled matrix's product over any column-block range [b0, b1) equals the row-major
// product over the same blocks (every prefix and every thread's share).
TEST(QuantKernels, PanelsEqualRowMajorOverEveryBlockRange) {
  for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    const int64_t rows = 13, cols = 32 * 19 + 5, n = 3;
    auto w = quantize_matrix(f, random_values(rows * cols, 5), rows, cols);
    std::vector<uint8_t> panels(w.bytes.size());
    qk::to_panels(f, w.bytes.data(), rows, w.nb, panels.data());
    auto x = quantize_rows(random_values(n * cols, 6), n, cols, Isa::Scalar);
    for (auto isa : {Isa::Scalar, qk::best_isa()})
      for (int64_t b0 : {0, 3, 8, 17})
        for (int64_t b1 : {b0, b0 + 1, int64_t{8}, int64_t{16}, w.nb}) {
          if (b1 < b0) continue;
          std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size(), 7.0f);
          qk::gemm_rows(f, w.bytes.data() + b0 * qk::block_bytes(f), w.row_bytes, rows, b1 - b0,
                        x.view(), b0, n, want.data(), rows, false, isa);
          qk::gemm_panels(f, panels.data(), rows, w.nb, b0, b1, x.view(), n, got.data(), rows,
                          false, isa);
          for (size_t e = 0; e < want.size(); ++e)
            ASSERT_NEAR(got[e], want[e], 1e-5 * (1.0 + std::fabs(want[e])))
                << qk::format_name(f) << " [" << b0 << ", " << b1 << ")";
        }
  }
}

TEST(QuantKernels, FormatNamesParseAndUnknownOnesAreRefused) {
  EXPECT_EQ(qk::parse_format("Q4_0", "--quant"), WeightFormat::Q4_0);
  EXPECT_EQ(qk::parse_format("q8_0", "--quant"), WeightFormat::Q8_0);
  EXPECT_EQ(qk::parse_format("f32", "--quant"), WeightFormat::F32);
  try {
    qk::parse_format("q5_k", "--quant");
    FAIL() << "q5_k accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("--quant"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("q4_0"), std::string::npos) << e.what();
  }
}
