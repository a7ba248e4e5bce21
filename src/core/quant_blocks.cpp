#include "core/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace flextron::quant {

namespace {

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

constexpr TypeInfo kTypes[] = {
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::BF16, "BF16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", kQK, sizeof(BlockQ4_0), true},
    {GgmlType::Q4_1, "Q4_1", kQK, sizeof(BlockQ4_1), true},
    {GgmlType::Q5_0, "Q5_0", kQK, sizeof(BlockQ5_0), true},
    {GgmlType::Q5_1, "Q5_1", kQK, sizeof(BlockQ5_1), true},
    {GgmlType::Q8_0, "Q8_0", kQK, sizeof(BlockQ8_0), true},
    {GgmlType::Q8_1, "Q8_1", kQK, sizeof(BlockQ8_1), false},
    {GgmlType::Q2_K, "Q2_K", kQK_K, sizeof(BlockQ2_K), true},
    {GgmlType::Q3_K, "Q3_K", kQK_K, sizeof(BlockQ3_K), true},
    {GgmlType::Q4_K, "Q4_K", kQK_K, sizeof(BlockQ4_K), true},
    {GgmlType::Q5_K, "Q5_K", kQK_K, sizeof(BlockQ5_K), true},
    {GgmlType::Q6_K, "Q6_K", kQK_K, sizeof(BlockQ6_K), true},
    {GgmlType::Q8_K, "Q8_K", kQK_K, sizeof(BlockQ8_K), true},
};

// Block i of an array that may sit at any alignment in a file buffer.
template <typename Block>
Block block_at(const void* src, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(src) + i * sizeof(Block), sizeof b);
  return b;
}

template <typename Block, typename Fn>
void each_block(const void* src, float* dst, int64_t n, int64_t block_size, Fn fn) {
  for (int64_t i = 0; i < n / block_size; ++i) fn(block_at<Block>(src, i), dst + i * block_size);
}

// The 5-bit q of Q5_0 / Q5_1 element j < 32.
int q5(const uint8_t* qs, const uint8_t* qh, int j) {
  uint32_t h;
  std::memcpy(&h, qh, sizeof h);
  const int nibble = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
  return nibble | static_cast<int>((h >> j) & 1) << 4;
}

// Q3_K's 6-bit scale s < 16 (see BlockQ3_K).
int q3k_scale(const uint8_t* b, int s) {
  const int low = s < 8 ? b[s] & 15 : b[s - 8] >> 4;
  const int high = (b[8 + s % 4] >> (2 * (s / 4))) & 3;
  return low | high << 4;
}

// Q4_K (qh null) and Q5_K: x = d * sc * q - dmin * mn per sub-block of 32.
void k_quant_4_5(uint16_t dh, uint16_t dminh, const uint8_t* scales, const uint8_t* qs,
                 const uint8_t* qh, float* y) {
  const float d = fp16_to_fp32(dh), dmin = fp16_to_fp32(dminh);
  for (int sub = 0; sub < 8; ++sub) {
    uint8_t sc, mn;
    scale_min_k4(sub, scales, &sc, &mn);
    const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(mn);
    const int chunk = sub / 2, shift = 4 * (sub % 2);
    for (int l = 0; l < 32; ++l) {
      int q = (qs[32 * chunk + l] >> shift) & 15;
      if (qh != nullptr && ((qh[l] >> sub) & 1)) q += 16;
      y[32 * sub + l] = dl * static_cast<float>(q) - ml;
    }
  }
}

}  // namespace

const TypeInfo* find_type(uint32_t id) {
  for (const auto& t : kTypes)
    if (static_cast<uint32_t>(t.id) == id) return &t;
  return nullptr;
}

const char* unread_type_name(uint32_t id) {
  static const std::pair<uint32_t, const char*> kUnread[] = {
      {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"},
      {20, "IQ4_NL"},  {21, "IQ3_S"},  {22, "IQ2_S"},   {23, "IQ4_XS"},
      {24, "I8"},      {25, "I16"},    {26, "I32"},     {27, "I64"},
      {28, "F64"},     {29, "IQ1_M"},  {34, "TQ1_0"},   {35, "TQ2_0"}};
  for (const auto& [known, name] : kUnread)
    if (known == id) return name;
  return nullptr;
}

const TypeInfo& type_info(GgmlType type) {
  const auto* t = find_type(static_cast<uint32_t>(type));
  if (t == nullptr) fail("ggml type", std::to_string(static_cast<uint32_t>(type)) + " is unknown");
  return *t;
}

int64_t bytes_of(GgmlType type, int64_t n) {
  const auto& t = type_info(type);
  return n / t.block_size * t.block_bytes;
}

std::string dequantized_type_names() {
  std::string names;
  for (const auto& t : kTypes)
    if (t.dequantized) names += (names.empty() ? "" : ", ") + std::string(t.name);
  return names;
}

void scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
    *min = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
  }
}

float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 31, mant = h & 1023;
  uint32_t bits;
  if (exp == 31) {
    bits = sign | 0x7F800000 | mant << 13;  // inf / NaN
  } else if (exp != 0) {
    bits = sign | (exp + 112) << 23 | mant << 13;  // rebias 15 -> 127
  } else {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t fp32_to_fp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t abs = bits & 0x7FFFFFFF;
  if (abs > 0x7F800000) return sign | 0x7E00;                // NaN
  if (abs >= 0x477FF000) return sign | 0x7C00;               // rounds to >= 65520: inf
  if (abs < 0x38800000) {                                    // below 2^-14: fp16 subnormal or 0
    const float v = std::fabs(f) * 16777216.0f;              // in units of 2^-24, exact
    return sign | static_cast<uint16_t>(std::nearbyint(v));  // round half to even
  }
  // Normal: keep 10 mantissa bits, round the 13 dropped ones to nearest even.
  const uint32_t rebias = abs - (112u << 23);
  const uint32_t half = rebias >> 13, rest = rebias & 0x1FFF;
  const uint32_t up = rest > 0x1000 || (rest == 0x1000 && (half & 1));
  return sign | static_cast<uint16_t>(half + up);
}

float bf16_to_fp32(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void dequantize(GgmlType type, const void* src, float* dst, int64_t n) {
  const auto& info = type_info(type);
  if (!info.dequantized) fail("ggml type", std::string(info.name) + " is not dequantized");
  if (n % info.block_size != 0)
    fail("ggml type", std::string(info.name) + ": " + std::to_string(n) +
                          " elements are not whole blocks of " + std::to_string(info.block_size));
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = type == GgmlType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
      }
      return;
    case GgmlType::Q4_0:
      return each_block<BlockQ4_0>(src, dst, n, kQK, [](const BlockQ4_0& b, float* y) {
        const float d = fp16_to_fp32(b.d);
        for (int j = 0; j < kQK / 2; ++j) {
          y[j] = static_cast<float>((b.qs[j] & 15) - 8) * d;
          y[j + kQK / 2] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
        }
      });
    case GgmlType::Q4_1:
      return each_block<BlockQ4_1>(src, dst, n, kQK, [](const BlockQ4_1& b, float* y) {
        const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
        for (int j = 0; j < kQK / 2; ++j) {
          y[j] = static_cast<float>(b.qs[j] & 15) * d + m;
          y[j + kQK / 2] = static_cast<float>(b.qs[j] >> 4) * d + m;
        }
      });
    case GgmlType::Q5_0:
      return each_block<BlockQ5_0>(src, dst, n, kQK, [](const BlockQ5_0& b, float* y) {
        const float d = fp16_to_fp32(b.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5(b.qs, b.qh, j) - 16) * d;
      });
    case GgmlType::Q5_1:
      return each_block<BlockQ5_1>(src, dst, n, kQK, [](const BlockQ5_1& b, float* y) {
        const float d = fp16_to_fp32(b.d), m = fp16_to_fp32(b.m);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5(b.qs, b.qh, j)) * d + m;
      });
    case GgmlType::Q8_0:
      return each_block<BlockQ8_0>(src, dst, n, kQK, [](const BlockQ8_0& b, float* y) {
        const float d = fp16_to_fp32(b.d);
        for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
      });
    case GgmlType::Q2_K:
      return each_block<BlockQ2_K>(src, dst, n, kQK_K, [](const BlockQ2_K& b, float* y) {
        const float d = fp16_to_fp32(b.d), dmin = fp16_to_fp32(b.dmin);
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < 4; ++j)
            for (int part = 0; part < 2; ++part) {
              const int sub = 8 * h + 2 * j + part;  // 16 elements each, in order
              const float dl = d * static_cast<float>(b.scales[sub] & 15);
              const float ml = dmin * static_cast<float>(b.scales[sub] >> 4);
              for (int l = 0; l < 16; ++l) {
                const int q = (b.qs[32 * h + 16 * part + l] >> (2 * j)) & 3;
                y[16 * sub + l] = dl * static_cast<float>(q) - ml;
              }
            }
      });
    case GgmlType::Q3_K:
      return each_block<BlockQ3_K>(src, dst, n, kQK_K, [](const BlockQ3_K& b, float* y) {
        const float d = fp16_to_fp32(b.d);
        for (int h = 0; h < 2; ++h)
          for (int j = 0; j < 4; ++j)
            for (int part = 0; part < 2; ++part) {
              const int sub = 8 * h + 2 * j + part;
              const float dl = d * static_cast<float>(q3k_scale(b.scales, sub) - 32);
              for (int l = 0; l < 16; ++l) {
                const int at = 16 * part + l;
                const int high = (b.hmask[at] >> (4 * h + j)) & 1;
                const int q = ((b.qs[32 * h + at] >> (2 * j)) & 3) - (high ? 0 : 4);
                y[16 * sub + l] = dl * static_cast<float>(q);
              }
            }
      });
    case GgmlType::Q4_K:
      return each_block<BlockQ4_K>(src, dst, n, kQK_K, [](const BlockQ4_K& b, float* y) {
        k_quant_4_5(b.d, b.dmin, b.scales, b.qs, nullptr, y);
      });
    case GgmlType::Q5_K:
      return each_block<BlockQ5_K>(src, dst, n, kQK_K, [](const BlockQ5_K& b, float* y) {
        k_quant_4_5(b.d, b.dmin, b.scales, b.qs, b.qh, y);
      });
    case GgmlType::Q6_K:
      return each_block<BlockQ6_K>(src, dst, n, kQK_K, [](const BlockQ6_K& b, float* y) {
        const float d = fp16_to_fp32(b.d);
        for (int h = 0; h < 2; ++h) {
          const uint8_t* L = b.ql + 64 * h;
          const uint8_t* H = b.qh + 32 * h;
          for (int l = 0; l < 32; ++l) {
            const int q[4] = {
                (L[l] & 15) | ((H[l] >> 0) & 3) << 4, (L[l + 32] & 15) | ((H[l] >> 2) & 3) << 4,
                (L[l] >> 4) | ((H[l] >> 4) & 3) << 4, (L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4};
            for (int k = 0; k < 4; ++k) {
              const int e = 128 * h + 32 * k + l;
              y[e] = d * static_cast<float>(b.scales[e / 16]) * static_cast<float>(q[k] - 32);
            }
          }
        }
      });
    case GgmlType::Q8_K:
      return each_block<BlockQ8_K>(src, dst, n, kQK_K, [](const BlockQ8_K& b, float* y) {
        for (int j = 0; j < kQK_K; ++j) y[j] = b.d * static_cast<float>(b.qs[j]);
      });
    case GgmlType::Q8_1:
      break;
  }
  fail("ggml type", std::string(info.name) + " is not dequantized");
}

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  if (n % kQK != 0) fail("Q8_0", "row length " + std::to_string(n) + " is not a multiple of 32");
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 b;
    b.d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
    std::memcpy(out + i * sizeof b, &b, sizeof b);
  }
}

namespace {

// A block's element of largest magnitude, with its sign (the first on ties).
float signed_max(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

}  // namespace

void quantize_q4_0(const float* x, void* dst, int64_t n) {
  if (n % kQK != 0) fail("Q4_0", "row length " + std::to_string(n) + " is not a multiple of 32");
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    // The signed element of largest magnitude maps to q = 0, i.e. -8 * d.
    const float max = signed_max(x);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b;
    b.d = fp32_to_fp16(d);
    auto q = [&](float v) {
      // x / d + 8.5 lies in [0.5, 16.5]: truncation rounds half up; 16 (x = -max) clamps to 15.
      const int t = static_cast<int>(v * id + 8.5f);
      return static_cast<uint8_t>(t < 15 ? t : 15);
    };
    for (int j = 0; j < kQK / 2; ++j) b.qs[j] = q(x[j]) | q(x[j + kQK / 2]) << 4;
    std::memcpy(out + i * sizeof b, &b, sizeof b);
  }
}

namespace {

// The nibble of x at scale 1 / id: round(x / d) + 8, clamped to [0, 15]. (Truncation is the
// floor wherever it matters: a negative argument clamps to 0 either way.)
inline int q4_level(float x, float id) {
  const int t = static_cast<int>(x * id + 8.5f);
  return t < 0 ? 0 : (t > 15 ? 15 : t);
}

BlockQ4_0 q4_block_at(const float* x, float d) {
  BlockQ4_0 b;
  b.d = fp32_to_fp16(d);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK / 2; ++j)
    b.qs[j] = static_cast<uint8_t>(q4_level(x[j], id) | q4_level(x[j + kQK / 2], id) << 4);
  return b;
}

// Squared error of a block against the values it was made from.
double q4_block_error(const float* x, const BlockQ4_0& b) {
  const float d = fp16_to_fp32(b.d);
  double e = 0.0;
  for (int j = 0; j < kQK; ++j) {
    const int nibble = j < kQK / 2 ? b.qs[j] & 15 : b.qs[j - kQK / 2] >> 4;
    const double r = x[j] - static_cast<double>(d) * (nibble - 8);
    e += r * r;
  }
  return e;
}

}  // namespace

// Only blocks that use level -8 are candidates: for those the reference formula applied to
// their dequantized values returns the very same block (the -8 element is the largest in
// magnitude, so d = max / -8 exactly), which makes quantize(dequantize(b)) == b for every block
// written here or by llama.cpp, and re-quantizing a loaded model exact.
void quantize_q4_0_fitted(const float* x, void* dst, int64_t n) {
  if (n % kQK != 0) fail("Q4_0", "row length " + std::to_string(n) + " is not a multiple of 32");
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    BlockQ4_0 best;
    quantize_q4_0(x, &best, kQK);  // the reference, kept unless a fitted scale does better
    double best_error = q4_block_error(x, best);
    const float max = signed_max(x);
    // Each trial's least-squares error is sum x^2 - (sum x l)^2 / sum l^2: the largest
    // (sum x l)^2 / sum l^2 wins, among the trials that use level -8.
    double best_gain = -1.0;
    float fitted = 0.0f;
    for (int k = -6; k <= 6 && best_error > 0.0; ++k) {
      const float id = (-8.0f + 0.25f * static_cast<float>(k)) / max;
      float sxl = 0.0f;
      int sll = 0, lowest = 0;
      for (int j = 0; j < kQK; ++j) {
        const int l = q4_level(x[j], id) - 8;
        lowest = std::min(lowest, l);
        sxl += x[j] * static_cast<float>(l);
        sll += l * l;
      }
      const bool uses_minus_8 = lowest == -8;
      const double gain = static_cast<double>(sxl) * sxl / sll;
      if (uses_minus_8 && sll > 0 && gain > best_gain) {
        best_gain = gain;
        fitted = sxl / static_cast<float>(sll);
      }
    }
    if (best_gain > 0.0) {
      const BlockQ4_0 candidate = q4_block_at(x, fp16_to_fp32(fp32_to_fp16(fitted)));
      bool uses_minus_8 = false;
      for (uint8_t byte : candidate.qs) uses_minus_8 |= (byte & 15) == 0 || (byte >> 4) == 0;
      if (uses_minus_8 && q4_block_error(x, candidate) < best_error) best = candidate;
    }
    std::memcpy(out + i * sizeof best, &best, sizeof best);
  }
}

}  // namespace flextron::quant
