// ggml's tensor types and quantization blocks (llama.cpp's ggml-common.h / ggml-quants.c), in one
// place: one table of types {id, name, elements per block, bytes per block}, the block layouts as
// structs, and the reference dequantization (and Q8_0 / Q4_0 quantization) written out from the
// formulas. GGUF import dequantizes with these; a quantized runtime can use the same layouts.
//
// Every block stores its elements in order; a row of n elements is n / block_size blocks back to
// back. Scales d / m / dmin are IEEE half precision (fp16) unless said otherwise. QK_K = 256.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flextron::quant {

// ggml's type ids (ggml.h's enum ggml_type; the ids are part of the GGUF format).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

struct TypeInfo {
  GgmlType id;
  const char* name;
  int64_t block_size;   // elements per block (1 for the float types)
  int64_t block_bytes;  // bytes per block
  bool dequantized;     // dequantize() reads it (Q8_1 is a dot-product intermediate only)
};

// The table entry for ggml type `id`, or nullptr when the id is not in the table.
const TypeInfo* find_type(uint32_t id);
const TypeInfo& type_info(GgmlType type);
// The name of a ggml type id that is not in the table (IQ2_XXS, I8, TQ1_0, ...: types this
// project does not read), or nullptr for an id ggml does not define.
const char* unread_type_name(uint32_t id);
// Bytes of `n` elements (n a multiple of the block size).
int64_t bytes_of(GgmlType type, int64_t n);
// "F32, F16, ..." : the types dequantize() reads, for error messages.
std::string dequantized_type_names();

constexpr int kQK = 32;     // elements per block of the Q4_0 ... Q8_1 formats
constexpr int kQK_K = 256;  // elements per super-block of the K-quants

// x = (q - 8) * d; element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[kQK / 2];
};
// x = q * d + m; nibbles as Q4_0.
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
// x = (q - 16) * d, q = nibble (as Q4_0) | bit j of qh (element j) / bit j + 16 (element j + 16)
// as its fifth bit; qh is a little-endian u32 stored as 4 bytes.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = q * d + m, q as Q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
// x = q * d, q signed 8-bit.
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
// Q8_0 plus s = d * sum(q): only an intermediate of ggml's dot products, never dequantized.
struct BlockQ8_1 {
  uint16_t d, s;
  int8_t qs[kQK];
};
// 16 sub-blocks of 16: x = d * (sc & 15) * q - dmin * (sc >> 4), sc = scales[sub-block], q
// 2-bit. Element order: for each half h (128 elements, qs[32h ... 32h + 31]) and each shift
// s = 0, 2, 4, 6: 16 elements from bits s of qs[32h + l], then 16 from qs[32h + 16 + l]; the
// sub-blocks are numbered in that order.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];
  uint8_t qs[kQK_K / 4];
  uint16_t d, dmin;
};
// 16 sub-blocks of 16: x = d * (sc - 32) * (q - (hmask bit ? 0 : 4)), q the 2 bits of qs as
// Q2_K's order, sc a 6-bit scale: low 4 bits from scales[s] (s < 8) or scales[s - 8] >> 4, high
// 2 bits from scales[8 + s % 4] >> (2 * (s / 4)). The high bit of element 128h + 32j' + l
// (j' = shift / 2, l < 32) is bit 4h + j' of hmask[l].
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 8 sub-blocks of 32: x = d * sc * q - dmin * mn, (sc, mn) the 6-bit pair of scale_min_k4; q
// 4-bit: for chunk c (64 elements) the low nibbles of qs[32c ... 32c + 31] (sub-block 2c) then
// their high nibbles (sub-block 2c + 1).
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
// As Q4_K with a fifth bit: sub-block b's element l (< 32) adds 16 when bit b of qh[l] is set.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// 16 sub-blocks of 16: x = d * scales[sub-block] * (q - 32), q 6-bit. For half h (128 elements,
// ql[64h ...], qh[32h ...], scales[8h ...]) and l < 32, with L = ql + 64h, H = qh + 32h:
//   element 128h + l      : L[l] & 15      | ((H[l] >> 0) & 3) << 4
//   element 128h + l + 32 : L[l + 32] & 15 | ((H[l] >> 2) & 3) << 4
//   element 128h + l + 64 : L[l] >> 4      | ((H[l] >> 4) & 3) << 4
//   element 128h + l + 96 : L[l + 32] >> 4 | ((H[l] >> 6) & 3) << 4
// and element e of the super-block uses scales[e / 16].
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
// x = d * q with d a float32 (not fp16); bsums[i] = sum of q over elements 16i ... 16i + 15
// (for dot products; not needed to dequantize).
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};

// Q4_K / Q5_K's 6-bit (scale, min) pair j < 8 from the 12 packed bytes: j < 4: the low 6 bits
// of q[j] and q[j + 4]; j >= 4: the low / high nibble of q[j + 4] with the top 2 bits of q[j - 4]
// / q[j] above it.
void scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even, as ggml's GGML_FP32_TO_FP16
float bf16_to_fp32(uint16_t h);

// Dequantizes n elements (a multiple of the block size) of `type` from `src` (n / block_size
// blocks, any alignment) into dst. Throws flextron::Error for a type the table does not read.
void dequantize(GgmlType type, const void* src, float* dst, int64_t n);

// llama.cpp's reference round-to-nearest quantizers (quantize_row_q8_0_ref / q4_0_ref) of n
// elements (a multiple of 32) into n / 32 blocks at dst.
//   Q8_0: d = amax / 127, q = round(x / d).
//   Q4_0: d = max / -8 with max the element of largest |x|, q = min(15, trunc(x / d + 8.5)).
void quantize_q8_0(const float* x, void* dst, int64_t n);
void quantize_q4_0(const float* x, void* dst, int64_t n);

// Q4_0 blocks (the same layout, read by any Q4_0 reader) whose scales are fitted: per block, the
// levels l = clamp(round(x / d), -8, 7) of 13 trial scales d = max / s, s = -8 + k / 4 for
// k = -6..6, each refitted by least squares (d = sum x l / sum l^2) and rounded to fp16; the one
// of least squared error is kept if it beats the reference formula's block and uses level -8
// (so that quantizing its dequantized values returns it unchanged). What we write (quantize,
// GGUF export, the runtime's --quant q4_0) uses it; quantize_q4_0 stays llama.cpp's formula.
void quantize_q4_0_fitted(const float* x, void* dst, int64_t n);

}  // namespace flextron::quant
