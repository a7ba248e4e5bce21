// Quantized GGUF: every ggml block format read here against a scalar reference written in this
// file from the block definition (byte offsets, not the library's structs or loops); Q8_0 / Q4_0
// quantization within the bound derived from its rounding; a Q8_0 / Q4_0 Llama file imported
// exactly as its dequantized blocks and within the format's error of the f32 model; and
// malformed files, each a one-line flextron::Error naming the file.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/quant_blocks.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/model_dir.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
namespace quant = flextron::quant;
using flextron::io::GgufFile;
using flextron::io::GgufType;
using quant::GgmlType;

// ---- the reference: one element of one block, from ggml-common.h's definitions -------------

float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return c10::detail::fp16_ieee_to_fp32_value(h);
}

// Q3_K's 16 scales: three u32 words of 12 bytes spread into four (low nibbles of words 0/1,
// high nibbles of words 0/1, each with 2 bits of word 2 on top), then minus 32.
int q3k_scale(const uint8_t* s12, int i) {
  uint32_t a[4];
  std::memcpy(a, s12, 12);
  const uint32_t lo = 0x0f0f0f0f, two = 0x03030303, w2 = a[2];
  const uint32_t out[4] = {(a[0] & lo) | ((w2 & two) << 4), (a[1] & lo) | (((w2 >> 2) & two) << 4),
                           ((a[0] >> 4) & lo) | (((w2 >> 4) & two) << 4),
                           ((a[1] >> 4) & lo) | (((w2 >> 6) & two) << 4)};
  uint8_t bytes[16];
  std::memcpy(bytes, out, 16);
  return bytes[i] - 32;
}

// Q4_K / Q5_K's scale and min of sub-block j: 0-3 in the low 6 bits of bytes j / j + 4; 4-7 as
// the nibbles of byte j + 4 with the top 2 bits of bytes j - 4 / j as bits 4-5.
void k4(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) + 16 * (s[j - 4] >> 6);
    *mn = (s[j + 4] >> 4) + 16 * (s[j] >> 6);
  }
}

float ref(GgmlType t, const uint8_t* b, int e) {
  auto nibble = [&](int qs, int i) {
    return i < 16 ? b[qs + i] & 15 : b[qs + i - 16] >> 4;
  };
  auto bit = [&](int qh, int i) {
    uint32_t h;
    std::memcpy(&h, b + qh, 4);
    return static_cast<int>((h >> i) & 1);
  };
  switch (t) {
    case GgmlType::Q4_0:
      return static_cast<float>(nibble(2, e) - 8) * f16(b);
    case GgmlType::Q4_1:
      return static_cast<float>(nibble(4, e)) * f16(b) + f16(b + 2);
    case GgmlType::Q5_0:
      return static_cast<float>(nibble(6, e) + 16 * bit(2, e) - 16) * f16(b);
    case GgmlType::Q5_1:
      return static_cast<float>(nibble(8, e) + 16 * bit(4, e)) * f16(b) + f16(b + 2);
    case GgmlType::Q8_0:
      return static_cast<float>(static_cast<int8_t>(b[2 + e])) * f16(b);
    case GgmlType::Q2_K: {  // scales @0, qs @16, d @80, dmin @82
      const int h = e / 128, r = e % 128, shift = 2 * (r / 32), l = r % 32;
      const int q = (b[16 + 32 * h + l] >> shift) & 3, sc = b[e / 16];
      const float dl = f16(b + 80) * static_cast<float>(sc & 15);
      const float ml = f16(b + 82) * static_cast<float>(sc >> 4);
      return dl * static_cast<float>(q) - ml;
    }
    case GgmlType::Q3_K: {  // hmask @0, qs @32, scales @96, d @108
      const int h = e / 128, r = e % 128, j = r / 32, l = r % 32;
      const int high = (b[l] >> (4 * h + j)) & 1;
      const int q = ((b[32 + 32 * h + l] >> (2 * j)) & 3) - (high ? 0 : 4);
      const float dl = f16(b + 108) * static_cast<float>(q3k_scale(b + 96, e / 16));
      return dl * static_cast<float>(q);
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {  // d @0, dmin @2, scales @4, (Q5_K: qh @16), qs @16 / @48
      const bool five = t == GgmlType::Q5_K;
      const int sub = e / 32, l = e % 32;
      int q = (b[(five ? 48 : 16) + 32 * (e / 64) + l] >> (4 * (sub % 2))) & 15;
      if (five) q += 16 * ((b[16 + l] >> sub) & 1);
      int sc, mn;
      k4(b + 4, sub, &sc, &mn);
      const float dl = f16(b) * static_cast<float>(sc), ml = f16(b + 2) * static_cast<float>(mn);
      return dl * static_cast<float>(q) - ml;
    }
    case GgmlType::Q6_K: {  // ql @0, qh @128, scales @192, d @208
      const int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
      const int low = b[64 * h + l + 32 * (k % 2)];
      const int q = (k < 2 ? low & 15 : low >> 4) | ((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4;
      const float sc = static_cast<float>(static_cast<int8_t>(b[192 + e / 16]));
      return f16(b + 208) * sc * static_cast<float>(q - 32);
    }
    case GgmlType::Q8_K: {  // d (float32) @0, qs @4, bsums @260
      float d;
      std::memcpy(&d, b, 4);
      return d * static_cast<float>(static_cast<int8_t>(b[4 + e]));
    }
    default:
      break;
  }
  ADD_FAILURE() << "no reference for type " << static_cast<int>(t);
  return 0;
}

// ggml's numbers (ggml-common.h): elements and bytes per block, and where the fp16 scales sit.
struct Format {
  GgmlType type;
  int block, bytes;
  std::vector<int> fp16_at;
};
const std::vector<Format> kFormats = {
    {GgmlType::Q4_0, 32, 18, {0}},      {GgmlType::Q4_1, 32, 20, {0, 2}},
    {GgmlType::Q5_0, 32, 22, {0}},      {GgmlType::Q5_1, 32, 24, {0, 2}},
    {GgmlType::Q8_0, 32, 34, {0}},      {GgmlType::Q2_K, 256, 84, {80, 82}},
    {GgmlType::Q3_K, 256, 110, {108}},  {GgmlType::Q4_K, 256, 144, {0, 2}},
    {GgmlType::Q5_K, 256, 176, {0, 2}}, {GgmlType::Q6_K, 256, 210, {208}},
    {GgmlType::Q8_K, 256, 292, {}}};

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Dequantizes `blocks` (whole blocks of format f) element by element with ref().
std::vector<float> ref_dequantize(const Format& f, const uint8_t* blocks, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    out[i] = ref(f.type, blocks + i / f.block * f.bytes, static_cast<int>(i % f.block));
  return out;
}

const Format& format_of(GgmlType t) {
  for (const auto& f : kFormats)
    if (f.type == t) return f;
  throw std::runtime_error("no format");
}

TEST(GgufQuant, TableMatchesGgmlIdsAndBlockSizes) {
  for (const auto& f : kFormats) {
    const auto* info = quant::find_type(static_cast<uint32_t>(f.type));
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->block_size, f.block) << info->name;
    EXPECT_EQ(info->block_bytes, f.bytes) << info->name;
  }
  // ggml.h's ids.
  const std::vector<std::pair<uint32_t, std::string>> ids = {
      {0, "F32"},   {1, "F16"},   {2, "Q4_0"},  {3, "Q4_1"},  {6, "Q5_0"},
      {7, "Q5_1"},  {8, "Q8_0"},  {9, "Q8_1"},  {10, "Q2_K"}, {11, "Q3_K"},
      {12, "Q4_K"}, {13, "Q5_K"}, {14, "Q6_K"}, {15, "Q8_K"}, {30, "BF16"}};
  for (const auto& [id, name] : ids) {
    ASSERT_NE(quant::find_type(id), nullptr) << id;
    EXPECT_EQ(quant::find_type(id)->name, name);
  }
  EXPECT_EQ(quant::find_type(4), nullptr);  // Q4_2, removed from ggml
  EXPECT_EQ(quant::find_type(99), nullptr);
  EXPECT_FALSE(quant::find_type(9)->dequantized);  // Q8_1: a dot-product intermediate
}

TEST(GgufQuant, EachDequantizerMatchesTheBlockDefinitionExactly) {
  std::mt19937 rng(7);
  std::normal_distribution<float> scale(0.0f, 0.5f);
  for (const auto& f : kFormats) {
    const int blocks = 5;
    // One byte in, so that blocks sit at odd addresses as they may in a file.
    std::vector<uint8_t> buf(1 + static_cast<size_t>(blocks * f.bytes));
    for (auto& byte : buf) byte = static_cast<uint8_t>(rng());
    uint8_t* data = buf.data() + 1;
    for (int i = 0; i < blocks; ++i) {
      uint8_t* b = data + i * f.bytes;
      for (int at : f.fp16_at) {  // finite scales (random bytes could be inf / NaN)
        const uint16_t h = c10::detail::fp16_ieee_from_fp32_value(scale(rng));
        std::memcpy(b + at, &h, 2);
      }
      if (f.type == GgmlType::Q8_K) {
        const float d = scale(rng);
        std::memcpy(b, &d, 4);
      }
    }
    const int64_t n = static_cast<int64_t>(blocks) * f.block;
    std::vector<float> got(static_cast<size_t>(n));
    quant::dequantize(f.type, data, got.data(), n);
    const auto want = ref_dequantize(f, data, n);
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += bits(got[i]) != bits(want[i]);
    EXPECT_EQ(mismatches, 0) << quant::type_info(f.type).name;
    // Not vacuous: the values vary.
    EXPECT_NE(got.front(), got.back()) << quant::type_info(f.type).name;
  }
}

TEST(GgufQuant, HalfAndBfloat16ConversionsMatchC10) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> h(65536), bf(65536);
  quant::dequantize(GgmlType::F16, all.data(), h.data(), 65536);
  quant::dequantize(GgmlType::BF16, all.data(), bf.data(), 65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    const float want_h = c10::detail::fp16_ieee_to_fp32_value(static_cast<uint16_t>(i));
    const float want_bf = c10::detail::f32_from_bits(static_cast<uint16_t>(i));
    if (std::isnan(want_h)) {
      EXPECT_TRUE(std::isnan(h[i])) << i;
    } else {
      ASSERT_EQ(bits(h[i]), bits(want_h)) << i;
    }
    if (!std::isnan(want_bf)) {
      ASSERT_EQ(bits(bf[i]), bits(want_bf)) << i;
    }
  }
  // fp32 -> fp16 rounds to nearest even, across the subnormal, normal and overflow ranges and
  // on exact ties (halfway between two halves).
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> exp(-28, 17);
  for (int i = 0; i < 200000; ++i) {
    float f = std::ldexp(mant(rng), exp(rng)) * (i % 2 ? -1.0f : 1.0f);
    if (i % 3 == 0 && std::fabs(f) < 60000) {  // a tie: two neighbouring halves' midpoint
      const uint16_t a = c10::detail::fp16_ieee_from_fp32_value(f);
      f = (c10::detail::fp16_ieee_to_fp32_value(a) +
           c10::detail::fp16_ieee_to_fp32_value(static_cast<uint16_t>(a + 1))) /
          2;
    }
    ASSERT_EQ(quant::fp32_to_fp16(f), c10::detail::fp16_ieee_from_fp32_value(f)) << f;
  }
}

// Quantize -> dequantize error. With d the unrounded scale and d_h its fp16 value (both from the
// block), q the integer the quantizer picked:
//   Q8_0: d = amax / 127, q = round(x / d) in [-127, 127]: |x - q d| <= d / 2, and storing d_h
//         adds |q| |d - d_h| <= 127 |d - d_h|.
//   Q4_0: d = max / -8 (max: the element of largest |x|), q - 8 = floor(x / d + 0.5) in
//         [-8, 8] clamped to 7: |x - (q - 8) d| <= |d| / 2 unless x / d >= 7.5 (only possible
//         for elements of the sign opposite to max), where the clamp makes it <= |d|; d_h adds
//         <= 8 |d - d_h|.
// x / d is computed as x * (1 / d) in float: 1e-4 |d| covers its rounding.
TEST(GgufQuant, Q8_0AndQ4_0RoundTripWithinTheFormatBound) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    const auto& f = format_of(type);
    const int blocks = 2000;
    std::vector<float> x(static_cast<size_t>(blocks) * 32);
    for (int i = 0; i < blocks; ++i) {
      const float s = std::ldexp(1.0f, i % 20 - 10);  // scales 2^-10 ... 2^9
      for (int j = 0; j < 32; ++j) x[32 * i + j] = normal(rng) * s;
    }
    std::vector<uint8_t> q(static_cast<size_t>(blocks) * f.bytes);
    (type == GgmlType::Q8_0 ? quant::quantize_q8_0 : quant::quantize_q4_0)(x.data(), q.data(),
                                                                           x.size());
    std::vector<float> y(x.size());
    quant::dequantize(type, q.data(), y.data(), static_cast<int64_t>(x.size()));
    const auto want = ref_dequantize(f, q.data(), static_cast<int64_t>(x.size()));
    double worst = 0;  // largest error / |d|
    int64_t clamped = 0;
    for (int i = 0; i < blocks; ++i) {
      const float* xb = &x[32 * i];
      float amax = 0, max = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), max = xb[j];
      const double d = type == GgmlType::Q8_0 ? amax / 127.0 : max / -8.0;
      const double dh = f16(&q[static_cast<size_t>(i) * f.bytes]);
      const double qmax = type == GgmlType::Q8_0 ? 127 : 8;
      for (int j = 0; j < 32; ++j) {
        ASSERT_EQ(bits(y[32 * i + j]), bits(want[32 * i + j]));
        const double err = std::fabs(xb[j] - y[32 * i + j]);
        const bool clamp = type == GgmlType::Q4_0 && xb[j] / d >= 7.5;
        clamped += clamp;
        const double bound = std::fabs(d) * ((clamp ? 1.0 : 0.5) + 1e-4) + qmax * std::fabs(d - dh);
        ASSERT_LE(err, bound) << quant::type_info(type).name << " block " << i << " element " << j;
        if (!clamp) worst = std::max(worst, err / std::fabs(d));
      }
    }
    // Round-to-nearest uses its half-step: the bound is tight, not loose.
    EXPECT_GT(worst, 0.45) << quant::type_info(type).name;
    if (type == GgmlType::Q4_0) {
      EXPECT_GT(clamped, 0);
    }
  }
  // Q4_0 on a grid of d / 2 (max = -4, d = 0.5, x = -8d ... 7.5d): whole steps come back
  // exactly, half steps round up by d / 2; an all-zero block is zeros.
  std::vector<float> x(32), y(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.25f;
  std::vector<uint8_t> q(34);
  quant::quantize_q4_0(x.data(), q.data(), 32);
  quant::dequantize(GgmlType::Q4_0, q.data(), y.data(), 32);
  for (int j = 0; j < 31; ++j) EXPECT_EQ(y[j], j % 2 ? x[j] + 0.25f : x[j]) << j;
  EXPECT_EQ(y[31], 3.5f);  // 7.5 d would round to 8 d: clamped to 7 d
  std::fill(x.begin(), x.end(), 0.0f);
  quant::quantize_q8_0(x.data(), q.data(), 32);
  quant::dequantize(GgmlType::Q8_0, q.data(), y.data(), 32);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

// ---- a quantized Llama file -------------------------------------------------------------

flextron::model::ModelConfig small_llama() {
  flextron::model::ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 96;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  return c;
}

torch::Tensor logits_of(flextron::model::TransformerImpl& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  return m.forward(torch::randint(0, 96, {4, 32}, torch::kLong));
}

// Fitted Q4_0 scales: the same block format, every block's squared error at most the reference
// formula's (it is one of the candidates), on Gaussian blocks lower in total (0.90x measured),
// and a fixed point of dequantize -> quantize.
TEST(GgufQuant, FittedQ4_0ScalesNeverLoseToTheReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int blocks = 3000;
  std::vector<float> x(static_cast<size_t>(blocks) * 32);
  for (int i = 0; i < blocks; ++i)
    for (int j = 0; j < 32; ++j) x[32 * i + j] = normal(rng) * std::ldexp(1.0f, i % 12 - 6);
  const auto& f = format_of(GgmlType::Q4_0);
  std::vector<uint8_t> reference(static_cast<size_t>(blocks) * f.bytes), fitted(reference.size());
  quant::quantize_q4_0(x.data(), reference.data(), static_cast<int64_t>(x.size()));
  quant::quantize_q4_0_fitted(x.data(), fitted.data(), static_cast<int64_t>(x.size()));
  const auto yr = ref_dequantize(f, reference.data(), static_cast<int64_t>(x.size()));
  const auto yf = ref_dequantize(f, fitted.data(), static_cast<int64_t>(x.size()));
  double total_reference = 0, total_fitted = 0;
  int changed = 0;
  for (int i = 0; i < blocks; ++i) {
    double er = 0, ef = 0;
    for (int j = 0; j < 32; ++j) {
      const size_t k = static_cast<size_t>(32 * i + j);
      er += (x[k] - yr[k]) * static_cast<double>(x[k] - yr[k]);
      ef += (x[k] - yf[k]) * static_cast<double>(x[k] - yf[k]);
    }
    ASSERT_LE(ef, er) << "block " << i;
    changed += ef < er;
    total_reference += er;
    total_fitted += ef;
  }
  EXPECT_GT(changed, blocks / 2);
  EXPECT_LT(total_fitted, 0.95 * total_reference) << total_fitted / total_reference;
  // Quantizing the dequantized blocks gives them back, fitted or reference (a loaded model
  // quantized again, an imported GGUF exported again).
  for (const auto* blocks_in : {&fitted, &reference}) {
    const auto y = ref_dequantize(f, blocks_in->data(), static_cast<int64_t>(x.size()));
    std::vector<uint8_t> again(blocks_in->size());
    quant::quantize_q4_0_fitted(y.data(), again.data(), static_cast<int64_t>(y.size()));
    EXPECT_EQ(again, *blocks_in);
  }
  // All-zero blocks stay exact zeros.
  std::vector<float> zeros(32, 0.0f);
  std::vector<uint8_t> q(f.bytes);
  quant::quantize_q4_0_fitted(zeros.data(), q.data(), 32);
  for (float v : ref_dequantize(f, q.data(), 32)) EXPECT_EQ(v, 0.0f);
}

// Each GGUF tensor of `f32` as Q8_0 / Q4_0 blocks would dequantize (2-D) or unchanged (1-D).
GgufFile dequantized_copy(const GgufFile& f32, GgmlType type) {
  GgufFile out = f32;
  for (auto& t : out.tensors) {
    if (t.data.dim() != 2) continue;
    auto x = t.data.contiguous();
    const auto& f = format_of(type);
    std::vector<uint8_t> q(static_cast<size_t>(x.numel() / 32 * f.bytes));
    // (as the GGUF writer quantizes: Q4_0 with fitted scales)
    (type == GgmlType::Q8_0 ? quant::quantize_q8_0 : quant::quantize_q4_0_fitted)(
        x.data_ptr<float>(), q.data(), x.numel());
    auto y = ref_dequantize(f, q.data(), x.numel());
    t.data = torch::from_blob(y.data(), x.sizes(), torch::kFloat).clone();
    t.type = GgmlType::F32;
  }
  return out;
}

TEST(GgufQuant, QuantizedLlamaImportsAsItsBlocksWithinTheFormatError) {
  torch::manual_seed(1);
  flextron::model::Transformer m(small_llama());
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "f32.gguf", *m, nullptr, GgmlType::F32);
  const auto f32 = flextron::io::read_gguf(dir / "f32.gguf");
  const auto reference = logits_of(*m);
  std::map<GgmlType, double> errors;
  for (const auto type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    const std::string name = quant::type_info(type).name;
    const auto path = dir / (name + ".gguf");
    flextron::io::save_gguf_model(path, *m, nullptr, type);
    const auto file = flextron::io::read_gguf(path);
    EXPECT_EQ(file.metadata.at("general.file_type").value, type == GgmlType::Q8_0 ? 7 : 2);
    const auto expected = dequantized_copy(f32, type);
    ASSERT_EQ(file.tensors.size(), expected.tensors.size());
    for (size_t i = 0; i < file.tensors.size(); ++i) {
      const auto& got = file.tensors[i];
      const auto& want = expected.tensors[i];
      ASSERT_EQ(got.name, want.name);
      EXPECT_EQ(*got.type, want.data.dim() == 2 ? type : GgmlType::F32) << got.name;
      EXPECT_TRUE(torch::equal(got.data, want.data)) << name << " " << got.name;
    }
    // Importing the quantized file gives exactly the model of an f32 file holding the
    // dequantized blocks (the rotary un-permutation only moves rows).
    flextron::io::write_gguf(dir / (name + "_dequantized.gguf"), expected);
    flextron::io::import_gguf_model(path, dir / (name + "_dir"));
    flextron::io::import_gguf_model(dir / (name + "_dequantized.gguf"), dir / (name + "_ref"));
    auto back = flextron::io::load_model_dir(dir / (name + "_dir")).model;
    auto ref_model = flextron::io::load_model_dir(dir / (name + "_ref")).model;
    const auto a = back->state(), b = ref_model->state(), orig = m->state();
    ASSERT_EQ(a.size(), orig.size());
    for (const auto& [tensor, t] : a) {
      EXPECT_TRUE(torch::equal(t, b.at(tensor))) << tensor;
      if (t.dim() == 2) {
        EXPECT_FALSE(torch::equal(t, orig.at(tensor))) << tensor;  // quantized
      }
    }
    const auto logits = logits_of(*back);
    errors[type] =
        ((logits - reference).pow(2).mean() / reference.pow(2).mean()).sqrt().item<double>();
  }
  // Relative RMS logit error. Each weight's rounding error is zero-mean with RMS about
  // step / sqrt(12), step = amax / 127 (Q8_0) or amax / 8 (Q4_0), and amax of 32 uniform
  // (torch.nn.Linear init) weights is about 0.97 of their range, i.e. 1.7 sigma: relative weight
  // error r = 1.7 / (sqrt(12) * 127) = 0.0039 (Q8_0) and 1.7 / (sqrt(12) * 8) = 0.061 (Q4_0).
  // Independent errors of the ~9 matrices on the path (2 layers x 7, and the head; attention
  // and the norms neither add nor remove much) add in quadrature: about 3 r, i.e. 1.2% / 18%.
  // The bounds allow 2x that.
  EXPECT_LT(errors[GgmlType::Q8_0], 0.025) << errors[GgmlType::Q8_0];
  EXPECT_LT(errors[GgmlType::Q4_0], 0.36) << errors[GgmlType::Q4_0];
  // Fewer bits, more error: Q4_0's step is 127 / 8 = 16x Q8_0's.
  EXPECT_GT(errors[GgmlType::Q4_0], 5 * errors[GgmlType::Q8_0]);
  std::cout << "relative RMS logit error: Q8_0 " << errors[GgmlType::Q8_0] << ", Q4_0 "
            << errors[GgmlType::Q4_0] << "\n";
}

TEST(GgufQuant, ExportWritesQuantizedFilesFromTheCli) {
  torch::manual_seed(2);
  flextron::model::Transformer m(small_llama());
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_model_dir(dir / "model", *m, nullptr);
  const auto r = flextron::testing::run_cli("export --model '" + (dir / "model").string() +
                                            "' --to gguf --gguf-type q8_0 --out '" +
                                            (dir / "q8.gguf").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto file = flextron::io::read_gguf(dir / "q8.gguf");
  for (const auto& t : file.tensors)
    EXPECT_EQ(*t.type, t.data.dim() == 2 ? GgmlType::Q8_0 : GgmlType::F32) << t.name;
  const auto i =
      flextron::testing::run_cli("import --from gguf --model '" + (dir / "q8.gguf").string() +
                                 "' --out '" + (dir / "back").string() + "'");
  ASSERT_EQ(i.exit_code, 0) << i.err;
}

// ---- malformed files ----------------------------------------------------------------------

void expect_error(const std::function<void()>& fn, const std::string& what,
                  const std::string& case_name) {
  try {
    fn();
    ADD_FAILURE() << case_name << ": accepted";
  } catch (const flextron::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(what), std::string::npos) << case_name << ": " << msg;
    EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << case_name << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << case_name << ": " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << case_name << ": not a flextron::Error: " << e.what();
  }
}

std::string u64_bytes(uint64_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 8);
}

// Position just past GGUF string `s` (u64 length + bytes) in `bytes`.
size_t after_string(const std::string& bytes, const std::string& s) {
  const auto at = bytes.find(u64_bytes(s.size()) + s);
  EXPECT_NE(at, std::string::npos) << s;
  return at + 8 + s.size();
}

template <typename T>
std::string patched(std::string bytes, size_t at, T value) {
  std::memcpy(&bytes[at], &value, sizeof value);
  return bytes;
}

template <typename T>
T read_at(const std::string& bytes, size_t at) {
  T v;
  std::memcpy(&v, &bytes[at], sizeof v);
  return v;
}

struct ValidFile {
  fs::path dir;
  GgufFile file;
  std::string bytes;
};

ValidFile valid_file() {
  torch::manual_seed(4);
  flextron::model::Transformer m(small_llama());
  ValidFile v;
  v.dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(v.dir / "m.gguf", *m, nullptr, GgmlType::Q8_0);
  v.file = flextron::io::read_gguf(v.dir / "m.gguf");
  v.file.metadata["test.array"] = flextron::io::gguf_array(GgufType::Int32, {1, 2, 3});
  // Written back as read: Q8_0 stays Q8_0 (re-quantizing dequantized Q8_0 blocks is exact).
  flextron::io::write_gguf(v.dir / "valid.gguf", v.file);
  v.bytes = flextron::testing::read_file(v.dir / "valid.gguf");
  return v;
}

TEST(GgufQuant, CorruptBytesAreOneLineErrors) {
  const auto v = valid_file();
  const auto& b = v.bytes;
  const auto bad = v.dir / "bad.gguf";
  EXPECT_NO_THROW(flextron::io::read_gguf(v.dir / "valid.gguf"));
  // Tensor infos: n_dims u32, ne u64..., type u32, offset u64.
  const size_t q = after_string(b, "blk.0.attn_q.weight");    // 2-D, Q8_0
  const size_t k = after_string(b, "blk.0.attn_k.weight");    // 2-D, Q8_0
  const size_t norm = after_string(b, "output_norm.weight");  // 1-D, F32
  const size_t align = after_string(b, "general.alignment");  // type u32, value u32
  const size_t array = after_string(b, "test.array");         // type, element, count
  ASSERT_EQ(read_at<uint32_t>(b, q), 2u);
  ASSERT_EQ(read_at<uint32_t>(b, q + 20), 8u);
  ASSERT_EQ(read_at<uint32_t>(b, norm), 1u);
  ASSERT_EQ(read_at<uint32_t>(b, align + 4), 32u);
  const auto norm_offset = read_at<uint64_t>(b, norm + 16);
  std::string duplicate = b;
  duplicate[k - 8] = 'q';  // blk.0.attn_k.weight -> blk.0.attn_q.weight
  const struct {
    const char* name;
    std::string bytes;
    const char* what;
  } cases[] = {
      {"huge tensor count", patched(b, 8, uint64_t{1} << 40), "cannot fit"},
      {"huge metadata count", patched(b, 16, ~uint64_t{0}), "cannot fit"},
      {"huge string length", patched(b, 24, uint64_t{1} << 62), "truncated: a string"},
      {"huge array count", patched(b, array + 8, uint64_t{1} << 61), "array elements"},
      {"unknown metadata type", patched(b, align, uint32_t{13}), "unknown type 13"},
      {"alignment 48", patched(b, align + 4, uint32_t{48}), "not a power of two"},
      {"alignment 0", patched(b, align + 4, uint32_t{0}), "not a power of two"},
      {"n_dims 5", patched(b, q, uint32_t{5}), "5 dimensions"},
      {"n_dims 0", patched(b, q, uint32_t{0}), "0 dimensions"},
      {"ne 0", patched(b, q + 4, uint64_t{0}), "impossible shape"},
      {"ne product overflows", patched(b, q + 4, uint64_t{1} << 62), "impossible shape"},
      {"unknown type id", patched(b, q + 20, uint32_t{99}),
       "blk.0.attn_q.weight has unknown ggml type id 99"},
      {"unread type", patched(b, q + 20, uint32_t{16}), "IQ2_XXS (16), which is not read"},
      {"Q8_1", patched(b, q + 20, uint32_t{9}), "Q8_1 (9), which is not read"},
      {"row not whole blocks", patched(b, norm + 12, uint32_t{12}), "not whole Q4_K blocks of 256"},
      {"offset not aligned", patched(b, norm + 16, norm_offset + 4),
       "is not a multiple of general.alignment 32"},
      {"tensor past the end", patched(b, norm + 16, uint64_t{b.size()} / 32 * 32 + 4096),
       "output_norm.weight (bytes"},
      {"offset wraps 2^64", patched(b, norm + 16, ~uint64_t{31}), "lies outside"},
      {"overlapping tensors", patched(b, k + 24, read_at<uint64_t>(b, q + 24)), "overlap"},
      {"duplicate tensor name", duplicate, "appears twice"},
  };
  for (const auto& c : cases) {
    std::ofstream(bad, std::ios::binary) << c.bytes;
    expect_error([&] { flextron::io::read_gguf(bad); }, c.what, c.name);
  }
  // Truncated anywhere: the header, the metadata, the tensor infos, the padding, the data.
  for (size_t cut : {size_t{2}, size_t{6}, size_t{20}, size_t{30}, array, q, norm + 8, b.size() / 3,
                     b.size() / 2, b.size() - 100, b.size() - 1}) {
    std::ofstream(bad, std::ios::binary) << b.substr(0, cut);
    expect_error([&] { flextron::io::read_gguf(bad); }, cut < 4 ? "bad magic" : "truncated",
                 "cut at " + std::to_string(cut));
  }
}

TEST(GgufQuant, BadMetadataAndLayersAreOneLineErrors) {
  const auto v = valid_file();
  using flextron::io::gguf_array;
  using flextron::io::gguf_f32;
  using flextron::io::gguf_u32;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto set = [](const std::string& key, flextron::io::GgufValue value) {
    return [key, value](GgufFile& f) {
      f.metadata[key] = value;
    };
  };
  auto drop_layer1 = [](GgufFile& f) {
    std::vector<flextron::io::GgufTensor> kept;
    for (auto& t : f.tensors)
      if (t.name.rfind("blk.1.", 0) != 0) kept.push_back(t);
    f.tensors = kept;
  };
  auto reshape = [](const std::string& name, std::vector<int64_t> shape) {
    return [name, shape](GgufFile& f) {
      for (auto& t : f.tensors)
        if (t.name == name) t.data = torch::zeros(shape);
    };
  };
  const struct {
    const char* name;
    std::function<void(GgufFile&)> edit;
    const char* what;
  } cases[] = {
      {"block_count 0", set("llama.block_count", gguf_u32(0)),
       "llama.block_count must be positive"},
      {"block_count float", set("llama.block_count", gguf_f32(2)),
       "llama.block_count must be an integer"},
      {"block_count below the layers", set("llama.block_count", gguf_u32(1)),
       "belongs to layer 1 but llama.block_count is 1"},
      {"block_count above the layers", set("llama.block_count", gguf_u32(3)),
       "missing tensor blk.2."},
      {"layer missing", drop_layer1, "missing tensor blk.1."},
      {"head_count 0", set("llama.attention.head_count", gguf_u32(0)),
       "llama.attention.head_count must be positive"},
      {"head_count_kv 0", set("llama.attention.head_count_kv", gguf_u32(0)),
       "llama.attention.head_count_kv must be positive"},
      {"head_count_kv[1] 0",
       set("llama.attention.head_count_kv", gguf_array(GgufType::Int32, {2, 0})),
       "head_count_kv[1] must be positive"},
      {"float array", set("llama.feed_forward_length", gguf_array(GgufType::Float32, {128, 128})),
       "feed_forward_length[0] must be an integer"},
      {"embedding_length 0", set("llama.embedding_length", gguf_u32(0)), "must be positive"},
      {"embedding_length string", set("llama.embedding_length", flextron::io::gguf_string("64")),
       "llama.embedding_length must be an integer"},
      {"context_length 0", set("llama.context_length", gguf_u32(0)), "must be positive"},
      {"feed_forward_length 0", set("llama.feed_forward_length", gguf_u32(0)), "must be positive"},
      {"epsilon NaN", set("llama.attention.layer_norm_rms_epsilon", gguf_f32(nan)),
       "layer_norm_rms_epsilon must be finite and positive"},
      {"epsilon 0", set("llama.attention.layer_norm_rms_epsilon", gguf_f32(0)),
       "must be finite and positive"},
      {"freq_base -1", set("llama.rope.freq_base", gguf_f32(-1)),
       "rope.freq_base must be finite and positive"},
      {"rope dimension odd", set("llama.rope.dimension_count", gguf_u32(15)), "must be even"},
      {"rope dimension 0", set("llama.rope.dimension_count", gguf_u32(0)), "must be positive"},
      {"architecture not a string", set("general.architecture", gguf_u32(1)),
       "general.architecture must be a string"},
      {"missing key", [](GgufFile& f) { f.metadata.erase("llama.block_count"); },
       "missing metadata key llama.block_count"},
      {"wrong shape", reshape("blk.0.attn_q.weight", {32, 64}),
       "blk.0.attn_q.weight has shape [32, 64] but the metadata implies [64, 64]"},
      {"wrong vocabulary width", reshape("token_embd.weight", {96, 32}), "token_embd.weight"},
      {"tokenizer value of the wrong type", set("tokenizer.ggml.model", gguf_u32(1)), "bad.gguf"},
  };
  for (const auto& c : cases) {
    auto file = v.file;
    c.edit(file);
    flextron::io::write_gguf(v.dir / "bad.gguf", file);
    expect_error([&] { flextron::io::import_gguf_model(v.dir / "bad.gguf", v.dir / "out"); },
                 c.what, c.name);
  }
  // The unedited file imports.
  flextron::io::write_gguf(v.dir / "bad.gguf", v.file);
  EXPECT_NO_THROW(flextron::io::import_gguf_model(v.dir / "bad.gguf", v.dir / "out"));
}

}  // namespace
