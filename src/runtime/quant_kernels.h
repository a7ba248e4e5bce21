// The fast runtime's quantized block kernels, in one place: activations quantized per block of
// 32, dot products of weight blocks with them, and the dequantization the exact path uses.
//
// Weights keep llama.cpp's block layouts (core/quant_blocks.h), so a GGUF tensor's bytes are a
// matrix here as they are:
//   Q8_0, 34 bytes: fp16 d, int8 q[32];             w_k = d * q_k
//   Q4_0, 18 bytes: fp16 d, 16 bytes of nibbles;    w_k = d * (n_k - 8), n_k the low nibble of
//                                                   byte k (k < 16) or the high one of k - 16
// A row of `cols` weights is ceil(cols / 32) blocks; a last partial block is padded with zero
// weights, so any width runs.
//
// Activations are quantized as llama.cpp's quantize_row_q8_0 does, per block of 32:
//   d_x = max_k |x_k| / 127,  q_k = round(x_k / d_x)   (round half away from zero; d_x = 0 -> 0)
// and a product of weight row i with activation row j is
//   y_ij = sum_b d_w(i, b) * d_x(j, b) * s_ij(b),   s_ij(b) = sum_k w_q(i, b, k) * x_q(j, b, k)
// where w_q is q (Q8_0) or n - 8 (Q4_0): the block sums s are exact integers, the float
// epilogue (scale and sum over blocks) the only rounding.
//
// Three paths compute it: a scalar reference (the formula as written), AVX2 (|w| and sign(x, w)
// bytes, _mm256_maddubs_epi16 then _mm256_madd_epi16 to int32) and AVX-512 VNNI
// (offset-unsigned weights into _mm512_dpbusd_epi32, started from the offset's share so every
// lane is exact: two blocks of one row per 512-bit register for decode and small batches, 16
// rows' repacked blocks per register for prefills and larger batches). The best path the CPU
// has is chosen once at load; tests compare each against the reference.
#pragma once

#include <cstdint>
#include <string>

namespace flextron::runtime::qk {

enum class WeightFormat { F32, Q8_0, Q4_0 };

// "f32", "q8_0", "q4_0".
const char* format_name(WeightFormat format);
// Parses a format name (as above, case-insensitive); throws flextron::Error naming `where` and
// the accepted names otherwise.
WeightFormat parse_format(const std::string& name, const std::string& where);
// "auto" -> `stored` (a model directory's own format, io::LoadedModel::stored_weights), else
// parse_format(requested).
WeightFormat resolve_format(const std::string& requested, const std::string& stored,
                            const std::string& where);
// Bytes per block of 32 weights (0 for F32).
int64_t block_bytes(WeightFormat format);

constexpr int64_t kBlock = 32;
inline int64_t blocks_for(int64_t elements) {
  return (elements + kBlock - 1) / kBlock;
}

enum class Isa { Scalar, Avx2, Avx512Vnni };
const char* isa_name(Isa isa);
// The fastest path this CPU runs (FLEXTRON_QUANT_ISA=scalar|avx2|avx512vnni forces a slower one).
Isa best_isa();
bool isa_supported(Isa isa);

// Quantizes `count` weights of x into blocks(count) blocks of `format` at dst (zero-padded), with
// llama.cpp's reference rounding for Q8_0 (quant::quantize_q8_0), fitted scales for Q4_0
// (quant::quantize_q4_0_fitted).
void quantize_weights(WeightFormat format, const float* x, int64_t count, uint8_t* dst);
// Dequantizes `nb` blocks into nb * 32 floats.
void dequantize_weights(WeightFormat format, const uint8_t* src, int64_t nb, float* dst,
                        Isa isa = best_isa());

// Activation rows quantized for the products: row j's block b has its 32 values at
// q[(j * ld_blocks + b) * 32] and its scale at d[j * ld_blocks + b].
struct QuantizedActivations {
  int8_t* q = nullptr;
  float* d = nullptr;
  int64_t ld_blocks = 0;
};

// Quantizes x[j * ldx + first ... first + count) for rows j < n into blocks
// [first / 32, first / 32 + blocks(count)) of `out` (first a multiple of 32; elements past count
// are taken as 0).
void quantize_activations(const float* x, int64_t ldx, int64_t n, int64_t first, int64_t count,
                          const QuantizedActivations& out, Isa isa = best_isa());

// Row-major weights: row i (i < rows) is `nb` blocks at w + i * row_bytes. For activation rows
// j < n, using their blocks [b0, b0 + nb):
//   y[j * ldy + i] = (accumulate ? y[j * ldy + i] : 0) + sum_b d_w d_x s_ij(b)
void gemm_rows(WeightFormat format, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t nb,
               const QuantizedActivations& x, int64_t b0, int64_t n, float* y, int64_t ldy,
               bool accumulate, Isa isa = best_isa());

// A matrix W [rows, cols] whose products take a prefix of its columns (o and down: a narrower
// sub-network reads fewer inputs) is stored in panels of kPanelBlocks block-columns: panel p
// holds, row after row, each row's blocks [p * kPanelBlocks, min(nb, (p + 1) * kPanelBlocks)).
// A prefix of the columns is then a prefix of the panels (one contiguous run), and within a
// panel each row's blocks are contiguous.
constexpr int64_t kPanelBlocks = 8;
// Byte offset of row `row`'s block `b` in a panelled matrix of `rows` rows and `nb` blocks a row.
int64_t panel_offset(WeightFormat format, int64_t rows, int64_t nb, int64_t row, int64_t b);
// Reorders a row-major matrix of blocks (row i's nb blocks at src + i * nb * block) into panels.
void to_panels(WeightFormat format, const uint8_t* src, int64_t rows, int64_t nb, uint8_t* dst);
// As gemm_rows for a panelled matrix, over the column blocks [b0, b1) (of both W and x).
void gemm_panels(WeightFormat format, const uint8_t* w, int64_t rows, int64_t nb, int64_t b0,
                 int64_t b1, const QuantizedActivations& x, int64_t n, float* y, int64_t ldy,
                 bool accumulate, Isa isa = best_isa());

}  // namespace flextron::runtime::qk
