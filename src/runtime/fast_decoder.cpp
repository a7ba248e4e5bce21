// Compiled without the precompiled header (only this file takes -fopenmp-simd, see CMakeLists.txt),
// so the LibTorch headers that model/transformer.h relies on come first.
#include <torch/torch.h>

#include "runtime/fast_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <string>

#include <ATen/Parallel.h>
#include <cblas.h>

#include "core/error.h"

namespace flextron::runtime {

namespace {

constexpr const char* kWhere = "fast runtime";

// Thread `part` of `parts`'s share [begin, end) of `total` items, in blocks of `align` (so a
// thread's rows of a matrix start on a cache line).
struct Range {
  int64_t begin, end;
  int64_t size() const { return end - begin; }
};
Range split(int64_t total, int parts, int part, int64_t align = 1) {
  const int64_t blocks = (total + align - 1) / align;
  const int64_t per = (blocks + parts - 1) / parts * align;
  const int64_t begin = std::min(total, per * part);
  return {begin, std::min(total, begin + per)};
}

// The part of `r` inside [offset, offset + size), shifted to start at 0.
Range clip(const Range& r, int64_t offset, int64_t size) {
  const int64_t begin = std::clamp(r.begin - offset, int64_t{0}, size);
  return {begin, std::clamp(r.end - offset, begin, size)};
}

// y[r, :rows] = beta * y[r, :rows] + x[r, :in] W[:rows, :in]^T for r < n, W row-major with
// leading dimension ldw. One row is a matrix-vector product.
void matmul(const float* x, int64_t ldx, int64_t n, int64_t in, const float* w, int64_t ldw,
            int64_t rows, float* y, int64_t ldy, float beta) {
  if (rows <= 0 || n <= 0) return;
  const auto i = [](int64_t v) {
    return static_cast<blasint>(v);
  };
  if (n == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, i(rows), i(in), 1.0f, w, i(ldw), x, 1, beta, y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i(n), i(rows), i(in), 1.0f, x, i(ldx), w,
                i(ldw), beta, y, i(ldy));
  }
}

// Weight rows dequantized at a time by the exact path (float activations, EngineOptions::exact).
constexpr int64_t kDequantRows = 32;

// How a thread runs the products of a quantized engine: its activations' blocks (x quantized by
// the caller before the product), a buffer for dequantized weights, and the path.
struct QuantProducts {
  qk::WeightFormat format = qk::WeightFormat::F32;
  bool exact = false;  // dequantize the weights and run float products instead
  float* deq = nullptr;
  // Each row by itself, as a pass of one row runs it (FastDecoder::verify): a matrix-matrix
  // product sums in another order than a matrix-vector one, which changes the last bits.
  bool per_row = false;
};

// Activation row r's blocks (a view of one row of `x`; empty stays empty).
qk::QuantizedActivations row_of(const qk::QuantizedActivations& x, int64_t r) {
  if (x.q == nullptr) return x;
  return {x.q + r * x.ld_blocks * qk::kBlock, x.d + r * x.ld_blocks, x.ld_blocks};
}

// y[r, :rows] = x[r, :in] W[row0 : row0 + rows, :in]^T for r < n, W a row matrix (q, k, v,
// gate, up, LM head): fp32 through BLAS; quantized as block products with xq (x's blocks), or
// exactly on dequantized rows.
void product(const MatrixView& W, int64_t row0, int64_t rows, int64_t in, const float* x,
             int64_t ldx, int64_t n, float* y, int64_t ldy, const QuantProducts& qp,
             const qk::QuantizedActivations& xq) {
  if (rows <= 0 || n <= 0) return;
  if (qp.per_row && n > 1) {
    for (int64_t r = 0; r < n; ++r)
      product(W, row0, rows, in, x + r * ldx, ldx, 1, y + r * ldy, ldy, qp, row_of(xq, r));
    return;
  }
  if (W.blocks == nullptr)
    return matmul(x, ldx, n, in, W.data + row0 * W.ld, W.ld, rows, y, ldy, 0.0f);
  const uint8_t* w = W.blocks + row0 * W.row_bytes;
  if (!qp.exact)
    return qk::gemm_rows(qp.format, w, W.row_bytes, rows, W.nb, xq, 0, n, y, ldy, false);
  const int64_t ld = W.nb * qk::kBlock;
  for (int64_t b = 0; b < rows; b += kDequantRows) {
    const int64_t m = std::min(kDequantRows, rows - b);
    for (int64_t i = 0; i < m; ++i)
      qk::dequantize_weights(qp.format, w + (b + i) * W.row_bytes, W.nb, qp.deq + i * ld);
    matmul(x, ldx, n, in, qp.deq, ld, m, y + b, ldy, 0.0f);
  }
}

// The partial product of o or down over their inputs [in0, in0 + count): y[r, :hidden] =
// sum_j x[r, j] W[:, j] for r < n (so a thread holding a contiguous block of inputs contributes
// its share of every output; count == 0 gives 0). fp32: W is stored transposed ([in, hidden]);
// quantized: in panels, in0 a multiple of 32, xq holding x's blocks of those inputs.
// accumulate: y += the partial product instead (count == 0 leaves y as it is).
void product_t(const MatrixView& W, int64_t in0, int64_t count, const float* x, int64_t ldx,
               int64_t n, float* y, int64_t ldy, const QuantProducts& qp,
               const qk::QuantizedActivations& xq, bool accumulate = false) {
  const int64_t hidden = W.blocks == nullptr ? W.cols : W.rows;
  if (qp.per_row && n > 1 && count > 0) {
    for (int64_t r = 0; r < n; ++r)
      product_t(W, in0, count, x + r * ldx, ldx, 1, y + r * ldy, ldy, qp, row_of(xq, r),
                accumulate);
    return;
  }
  if (count <= 0) {
    if (accumulate) return;
    for (int64_t r = 0; r < n; ++r) std::fill(y + r * ldy, y + r * ldy + hidden, 0.0f);
    return;
  }
  const auto i = [](int64_t v) {
    return static_cast<blasint>(v);
  };
  const float beta = accumulate ? 1.0f : 0.0f;
  if (W.blocks == nullptr) {
    const float* w = W.data + in0 * W.ld;
    if (n == 1) {
      cblas_sgemv(CblasRowMajor, CblasTrans, i(count), i(hidden), 1.0f, w, i(W.ld), x + in0, 1,
                  beta, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, i(n), i(hidden), i(count), 1.0f,
                  x + in0, i(ldx), w, i(W.ld), beta, y, i(ldy));
    }
    return;
  }
  const int64_t b0 = in0 / qk::kBlock, b1 = qk::blocks_for(in0 + count);
  if (!qp.exact)
    return qk::gemm_panels(qp.format, W.blocks, W.rows, W.nb, b0, b1, xq, n, y, ldy, accumulate);
  // Exact: each panel's blocks of a group of output rows dequantized, then one sgemm over the
  // inputs that are really there (the last block's padding is not read from x).
  for (int64_t p = b0 / qk::kPanelBlocks; p * qk::kPanelBlocks < b1; ++p) {
    const int64_t lo = std::max(b0, p * qk::kPanelBlocks);
    const int64_t hi = std::min(b1, std::min(W.nb, (p + 1) * qk::kPanelBlocks));
    const int64_t k0 = lo * qk::kBlock, k = std::min(hi * qk::kBlock, in0 + count) - k0;
    const int64_t ld = (hi - lo) * qk::kBlock;
    for (int64_t r0 = 0; r0 < W.rows; r0 += kDequantRows) {
      const int64_t m = std::min(kDequantRows, W.rows - r0);
      for (int64_t r = 0; r < m; ++r)
        qk::dequantize_weights(qp.format,
                               W.blocks + qk::panel_offset(qp.format, W.rows, W.nb, r0 + r, lo),
                               hi - lo, qp.deq + r * ld);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, i(n), i(m), i(k), 1.0f, x + k0, i(ldx),
                  qp.deq, i(ld), lo == b0 ? beta : 1.0f, y + r0, i(ldy));
    }
  }
}

int64_t round_up(int64_t v, int64_t align) {
  return (v + align - 1) / align * align;
}

// The pieces of a product over rows of several architectures (FastDecoder::decode_batch): row r
// uses the first reach[r] columns of the product (heads, KV groups, neurons or inputs). The
// range [begin, end) splits at every row's reach (rounded up to `align`: quantized inputs go by
// whole blocks); fn(p, q, r0, m) computes piece [p, q) for rows [r0, r0 + m), a run of
// consecutive rows that reach q. Nested widths make a narrower row's columns a prefix of a
// wider row's, so the columns every row shares are one piece over all rows and each weight is
// read once; rows of one architecture make one call over the whole range.
template <class Fn>
void for_each_piece(const Range& range, const int64_t* reach, int64_t n, int64_t align, Fn&& fn) {
  for (int64_t p = range.begin; p < range.end;) {
    int64_t q = range.end;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t e = round_up(reach[r], align);
      if (e > p && e < q) q = e;
    }
    for (int64_t r = 0; r < n;) {
      if (round_up(reach[r], align) <= p) {
        ++r;
        continue;
      }
      int64_t r1 = r + 1;
      while (r1 < n && round_up(reach[r1], align) > p) ++r1;
      fn(p, q, r, r1 - r);
      r = r1;
    }
    p = q;
  }
}

// product_t over inputs `in` for rows that each sum only their first reach[r] inputs (rounded
// up to `align`; the caller zeroed x past each reach inside that block): the first piece writes
// y, later ones add to it, and rows that reach none of `in` get 0.
void product_t_pieces(const MatrixView& W, const Range& in, const int64_t* reach, int64_t align,
                      const float* x, int64_t ldx, int64_t n, float* y, int64_t ldy,
                      const QuantProducts& qp, const qk::QuantizedActivations& xq) {
  const int64_t hidden = W.blocks == nullptr ? W.cols : W.rows;
  for (int64_t r = 0; r < n; ++r)
    if (in.size() <= 0 || round_up(reach[r], align) <= in.begin)
      std::fill(y + r * ldy, y + r * ldy + hidden, 0.0f);
  for_each_piece(in, reach, n, align, [&](int64_t p, int64_t q, int64_t r0, int64_t m) {
    product_t(W, p, q - p, x + r0 * ldx, ldx, m, y + r0 * ldy, ldy, qp, row_of(xq, r0),
              /*accumulate=*/p != in.begin);
  });
}

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w for r < n, rows of `dim`.
void rmsnorm(const float* x, int64_t n, int64_t dim, const float* w, float eps, float* out) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] * inv * w[i];
  }
}

// out[r] = (x[r] - mean) / sqrt(var + eps) * w + b for r < n (LayerNorm, the GPT family's);
// with b null, rmsnorm.
void normalize(const float* x, int64_t n, int64_t dim, const float* w, const float* b, float eps,
               float* out) {
  if (b == nullptr) return rmsnorm(x, n, dim, w, eps, out);
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const float mean = sum / static_cast<float>(dim);
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) o[i] = (xr[i] - mean) * inv * w[i] + b[i];
  }
}

// y[r, :size] += b[:size] for r < n: a bias after a product (the GPT family's).
void add_bias(float* y, int64_t ldy, int64_t n, const float* b, int64_t size) {
  if (b == nullptr) return;
  for (int64_t r = 0; r < n; ++r) {
    float* yr = y + r * ldy;
#pragma omp simd
    for (int64_t i = 0; i < size; ++i) yr[i] += b[i];
  }
}

// x = gelu(x): tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (gelu_new), or exact
// 0.5 x (1 + erf(x / sqrt(2))).
void gelu(float* x, int64_t n, bool tanh_form) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f, kInvSqrt2 = 0.7071067811865476f;
  if (tanh_form) {
    for (int64_t i = 0; i < n; ++i)
      x[i] =
          0.5f * x[i] * (1.0f + std::tanh(kSqrt2OverPi * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
  } else {
    for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
  }
}

// HF's rotate-half RoPE on one head: pairs (i, i + half), (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
void rotate(float* x, const float* cos, const float* sin, int64_t half) {
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

// e^x for x <= 0 (softmax after subtracting the maximum), in a form loops vectorize: x = n ln2 + r
// with |r| <= ln2 / 2, e^r by its Taylor polynomial to r^6 (relative error < 2e-7), 2^n built in
// the exponent bits. Below -87, e^x underflows float anyway.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504f + 0.5f);
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;  // ln2 in two parts
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// out = sum_s p_s v_s with p = softmax(q . k_s * scale) over positions s < span, for one KV group
// of a cache: keys transposed, [hd, capacity] (so the scores are hd passes of a vector
// multiply-add over contiguous positions, whatever hd is), values [capacity, hd].
__attribute__((target_clones("avx512f", "avx2", "default"))) void attend(
    const float* q, const float* keys, int64_t capacity, const float* values, int64_t span,
    int64_t hd, float scale, float* scores, float* out) {
  std::fill(scores, scores + span, 0.0f);
  for (int64_t i = 0; i < hd; ++i) {
    const float qi = q[i] * scale;
    const float* k = keys + i * capacity;
#pragma omp simd
    for (int64_t s = 0; s < span; ++s) scores[s] += qi * k[s];
  }
  float top = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : top)
  for (int64_t s = 0; s < span; ++s) top = std::max(top, scores[s]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t s = 0; s < span; ++s) {
    scores[s] = exp_nonpositive(scores[s] - top);
    sum += scores[s];
  }
  std::fill(out, out + hd, 0.0f);
  for (int64_t s = 0; s < span; ++s) {
    const float p = scores[s];
    const float* v = values + s * hd;
#pragma omp simd
    for (int64_t i = 0; i < hd; ++i) out[i] += p * v[i];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

// gate[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i].
void swiglu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

int64_t max_over_layers(const model::ModelConfig& c,
                        int64_t (*width)(const model::ModelConfig&, int64_t)) {
  int64_t m = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) m = std::max(m, width(c, l));
  return m;
}

}  // namespace

FastDecoder::FastDecoder(const model::TransformerImpl& model, const EngineOptions& options)
    : weights_(model, options.format),
      full_(model::full_architecture(model.config())),
      exact_(options.exact) {
  const auto& c = weights_.config();
  threads_ = options.threads > 0 ? options.threads : std::max(1, at::get_num_threads());
  team_ = std::make_unique<ThreadTeam>(threads_);
  max_rows_ = std::max<int64_t>(1, options.max_rows);
  const int64_t hd = c.head_dim();
  const int64_t kv_dim = hd * max_over_layers(c, [](const model::ModelConfig& m, int64_t l) {
                           return m.layer_kv_heads(l);
                         });
  const int64_t q_dim = kv_dim * c.group_size();
  const int64_t mlp =
      max_over_layers(c, [](const model::ModelConfig& m, int64_t l) { return m.layer_mlp(l); });
  const auto rows = static_cast<size_t>(max_rows_);
  rows_.resize(rows);
  x_.resize(rows * c.hidden_size);
  x2_.resize(rows * c.hidden_size);
  po_.resize(static_cast<size_t>(threads_) * rows * c.hidden_size);
  pm_.resize(po_.size());
  q_.resize(rows * q_dim);
  att_.resize(rows * q_dim);
  k_.resize(rows * kv_dim);
  v_.resize(rows * kv_dim);
  if (!weights_.gpt()) gate_.resize(rows * mlp);  // the GPT family's MLP has no gate
  up_.resize(rows * mlp);
  logits_.resize(rows * c.vocab_size);
  xb_.resize(static_cast<size_t>(threads_) * rows * c.hidden_size);
  reach_.resize(static_cast<size_t>(threads_) * 4 * rows);
  scores_.resize(static_cast<size_t>(threads_) * c.max_position_embeddings);
  if (weights_.quantized()) {
    // Per thread: the blocks of its copy of xb; shared: the blocks of att / the MLP activations
    // (each thread quantizes its own inputs of o and down); the exact path's dequantized rows.
    hidden_blocks_ = qk::blocks_for(c.hidden_size);
    act_blocks_ = qk::blocks_for(std::max(q_dim, mlp));
    xq_.resize(static_cast<size_t>(threads_) * rows * hidden_blocks_ * qk::kBlock);
    xd_.resize(static_cast<size_t>(threads_) * rows * hidden_blocks_);
    aq_.resize(rows * act_blocks_ * qk::kBlock);
    ad_.resize(rows * act_blocks_);
    if (exact_)
      deq_.resize(static_cast<size_t>(threads_ * kDequantRows) *
                  std::max(hidden_blocks_, qk::kPanelBlocks) * qk::kBlock);
  }
}

int64_t FastDecoder::scratch_bytes() const {
  size_t n = 0;
  for (const auto* b : {&x_, &x2_, &po_, &pm_, &q_, &k_, &v_, &att_, &gate_, &up_, &logits_, &xb_,
                        &scores_, &deq_, &xd_, &ad_})
    n += b->size();
  return static_cast<int64_t>(n * sizeof(float) + xq_.size() + aq_.size());
}

void EngineCache::truncate(int64_t length) {
  if (length < 0 || length > length_)
    fail(kWhere, "cannot truncate a cache of " + std::to_string(length_) + " positions to " +
                     std::to_string(length));
  length_ = length;
}

std::vector<float> EngineCache::stored() const {
  std::vector<float> out;
  for (size_t l = 0; l < kv_.size(); ++l)
    for (int64_t g = 0; g < kv_[l]; ++g) {
      // keys [hd, capacity] (transposed), values [capacity, hd].
      const float* k = data_.data() + offset_[l] + g * capacity_ * head_dim_;
      const float* v = data_.data() + offset_[l] + (kv_[l] + g) * capacity_ * head_dim_;
      for (int64_t i = 0; i < head_dim_; ++i)
        out.insert(out.end(), k + i * capacity_, k + i * capacity_ + length_);
      out.insert(out.end(), v, v + length_ * head_dim_);
    }
  return out;
}

EngineCache FastDecoder::make_cache(int64_t capacity, const model::Architecture& arch) const {
  const auto& c = config();
  if (capacity < 1 || capacity > c.max_position_embeddings)
    fail(kWhere, "cache capacity " + std::to_string(capacity) + " outside [1, " +
                     std::to_string(c.max_position_embeddings) + "]");
  const auto& widths = resolve(arch);
  EngineCache cache;
  cache.capacity_ = capacity;
  cache.head_dim_ = c.head_dim();
  int64_t size = 0;
  for (const auto& w : widths) {
    cache.offset_.push_back(size);
    cache.kv_.push_back(w.kv_groups);
    size += 2 * w.kv_groups * capacity * cache.head_dim_;
  }
  cache.data_.assign(static_cast<size_t>(size), 0.0f);
  return cache;
}

const model::Architecture& FastDecoder::resolve(const model::Architecture& arch) const {
  if (arch.empty()) return full_;
  model::check_architecture(config(), arch, "architecture");
  return arch;
}

void FastDecoder::check_cache(const EngineCache& cache, const model::Architecture& widths,
                              int64_t steps) const {
  if (cache.kv_.size() != widths.size()) fail(kWhere, "the cache was not made by this engine");
  for (size_t l = 0; l < widths.size(); ++l)
    if (cache.kv_[l] != widths[l].kv_groups)
      fail(kWhere, "the KV cache was made for " + std::to_string(cache.kv_[l]) +
                       " KV groups at layer " + std::to_string(l) + ", the architecture asks for " +
                       std::to_string(widths[l].kv_groups));
  if (cache.length_ + steps > cache.capacity_)
    fail(kWhere, "positions up to " + std::to_string(cache.length_ + steps - 1) +
                     " exceed the cache capacity " + std::to_string(cache.capacity_));
}

const float* FastDecoder::prefill(const int64_t* tokens, int64_t count, EngineCache& cache,
                                  const model::Architecture& arch, float* all_logits) {
  if (count < 1) fail(kWhere, "prefill needs at least one token");
  const auto& widths = resolve(arch);
  check_cache(cache, widths, count);
  const int64_t vocab = config().vocab_size;
  for (int64_t done = 0; done < count;) {
    const int64_t n = std::min(max_rows_, count - done);
    for (int64_t r = 0; r < n; ++r)
      rows_[r] = Row{tokens[done + r], &cache, cache.length_ + r, &widths};
    const bool last = done + n == count;
    // Only the last token's logits are needed, unless the caller wants every row's.
    const int64_t head_from = all_logits ? 0 : (last ? n - 1 : n);
    run(n, head_from);
    cache.length_ += n;
    if (all_logits)
      std::memcpy(all_logits + done * vocab, logits_.data(),
                  static_cast<size_t>(n * vocab) * sizeof(float));
    done += n;
  }
  return all_logits ? all_logits + (count - 1) * vocab : logits_.data();
}

const float* FastDecoder::verify(const int64_t* tokens, int64_t count, EngineCache& cache,
                                 const model::Architecture& arch, float* all_logits) {
  if (count < 1 || count > max_rows_)
    fail(kWhere, "a verifying pass takes 1 to " + std::to_string(max_rows_) + " tokens, got " +
                     std::to_string(count));
  const auto& widths = resolve(arch);
  check_cache(cache, widths, count);
  for (int64_t r = 0; r < count; ++r) rows_[r] = Row{tokens[r], &cache, cache.length_ + r, &widths};
  run(count, 0, nullptr, /*per_row=*/true);
  cache.length_ += count;
  std::memcpy(all_logits, logits_.data(),
              static_cast<size_t>(count * config().vocab_size) * sizeof(float));
  return all_logits;
}

const float* FastDecoder::decode(int64_t token, EngineCache& cache, const model::Architecture& arch,
                                 model::LayerRouter* router) {
  const auto& widths = resolve(arch);
  check_cache(cache, widths, 1);
  if (router != nullptr && !router->routes_on_host())
    fail(kWhere, "this router cannot route on the fast runtime (see LayerRouter::routes_on_host)");
  rows_[0] = Row{token, &cache, cache.length_, &widths};
  run(1, 0, router);
  cache.length_ += 1;
  return logits_.data();
}

const float* FastDecoder::decode_batch(const std::vector<int64_t>& tokens,
                                       const std::vector<EngineCache*>& caches,
                                       const model::Architecture& arch) {
  return decode_batch(tokens, caches,
                      std::vector<const model::Architecture*>(tokens.size(), &arch));
}

const float* FastDecoder::decode_batch(const std::vector<int64_t>& tokens,
                                       const std::vector<EngineCache*>& caches,
                                       const std::vector<const model::Architecture*>& archs) {
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0 || caches.size() != tokens.size() || archs.size() != tokens.size())
    fail(kWhere, std::to_string(tokens.size()) + " tokens for " + std::to_string(caches.size()) +
                     " caches and " + std::to_string(archs.size()) + " architectures");
  if (n > max_rows_)
    fail(kWhere, std::to_string(n) + " sequences in one step, the engine was made for at most " +
                     std::to_string(max_rows_));
  for (int64_t b = 0; b < n; ++b) {
    const auto& widths = archs[b] == nullptr ? full_ : resolve(*archs[b]);
    check_cache(*caches[b], widths, 1);
    for (int64_t a = 0; a < b; ++a)
      if (caches[a] == caches[b]) fail(kWhere, "one cache given for two sequences of a batch");
    rows_[b] = Row{tokens[b], caches[b], caches[b]->length_, &widths};
  }
  run(n, 0);
  for (auto* cache : caches) cache->length_ += 1;
  return logits_.data();
}

EngineCache FastDecoder::cache_from(const model::KVCache& from, int64_t capacity) const {
  const auto& c = config();
  model::Architecture kv_widths = full_;
  if (static_cast<int64_t>(from.keys.size()) != c.num_hidden_layers)
    fail(kWhere, "the KV cache to copy has " + std::to_string(from.keys.size()) +
                     " layers, the model " + std::to_string(c.num_hidden_layers));
  for (size_t l = 0; l < from.keys.size(); ++l) {
    if (!from.keys[l].defined() || from.keys[l].size(0) != 1 ||
        from.keys[l].size(3) != c.head_dim())
      fail(kWhere, "the KV cache to copy is not one filled sequence at layer " + std::to_string(l));
    kv_widths[l].kv_groups = from.keys[l].size(1);
  }
  if (from.length > capacity)
    fail(kWhere, "the KV cache to copy holds more positions than the capacity");
  auto cache = make_cache(capacity, kv_widths);
  const int64_t hd = c.head_dim(), length = from.length;
  for (size_t l = 0; l < from.keys.size(); ++l) {
    // [1, groups, capacity, hd] -> keys transposed [groups, hd, capacity], values [groups,
    // capacity, hd].
    auto keys = from.keys[l][0].narrow(1, 0, length).to(torch::kCPU, torch::kFloat).contiguous();
    auto values =
        from.values[l][0].narrow(1, 0, length).to(torch::kCPU, torch::kFloat).contiguous();
    for (int64_t g = 0; g < kv_widths[l].kv_groups; ++g) {
      const float* k = keys.data_ptr<float>() + g * length * hd;
      float* dst = cache.keys(static_cast<int64_t>(l), g);
      for (int64_t p = 0; p < length; ++p)
        for (int64_t i = 0; i < hd; ++i) dst[i * capacity + p] = k[p * hd + i];
      std::memcpy(cache.values(static_cast<int64_t>(l), g),
                  values.data_ptr<float>() + g * length * hd,
                  static_cast<size_t>(length * hd) * sizeof(float));
    }
  }
  cache.length_ = length;
  return cache;
}

void FastDecoder::run(int64_t n, int64_t head_from, model::LayerRouter* router, bool per_row) {
  const auto& c = config();
  const int64_t hidden = c.hidden_size, hd = c.head_dim(), half = hd / 2;
  const int64_t group = c.group_size(), vocab = c.vocab_size;
  const int64_t q_ld = static_cast<int64_t>(q_.size()) / max_rows_;
  const int64_t kv_ld = static_cast<int64_t>(k_.size()) / max_rows_;
  const int64_t mlp_ld = static_cast<int64_t>(up_.size()) / max_rows_;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* cos_table = weights_.rope_cos();
  const float* sin_table = weights_.rope_sin();
  const float* positions = weights_.positions();
  const bool gpt = weights_.gpt(), gelu_tanh = c.gelu_tanh;
  for (int64_t r = 0; r < n; ++r)
    if (rows_[r].token < 0 || rows_[r].token >= vocab)
      fail(kWhere, "token " + std::to_string(rows_[r].token) + " outside the vocabulary of " +
                       std::to_string(vocab));
  const bool quantized = weights_.quantized(), quantize_x = quantized && !exact_;
  // The residual stream alternates between two buffers (each thread writes its columns of the
  // next while all read the current one); the o and down products leave per-thread partial
  // sums that the next step adds in.
  float* resid_in = x_.data();
  float* resid_mid = x2_.data();
  const size_t part_stride = static_cast<size_t>(max_rows_ * hidden);

  std::mutex router_error_mutex;
  std::exception_ptr router_error;
  if (router != nullptr) routed_mlp_.assign(static_cast<size_t>(c.num_hidden_layers), 0);
  // Rows of several architectures (decode_batch): each product runs in pieces (for_each_piece).
  const model::Architecture& widths = *rows_[0].widths;
  bool mixed = false;
  for (int64_t r = 1; r < n; ++r) mixed = mixed || *rows_[r].widths != widths;
  const int64_t in_align = quantized ? qk::kBlock : 1;
  team_->run([&](int t) {
    const int nt = team_->size();
    float* xb = xb_.data() + static_cast<size_t>(t) * max_rows_ * hidden;
    float* scores = scores_.data() + static_cast<size_t>(t) * c.max_position_embeddings;
    QuantProducts qp;
    qp.format = weights_.format();
    qp.exact = exact_;
    qp.per_row = per_row;
    qp.deq =
        deq_.empty() ? nullptr : deq_.data() + static_cast<size_t>(t) * (deq_.size() / threads_);
    // This thread's blocks of xb, and the shared blocks of att / the MLP activations.
    qk::QuantizedActivations xq, aq;
    if (quantized) {
      const size_t mine = static_cast<size_t>(t) * max_rows_ * hidden_blocks_;
      xq = {xq_.data() + mine * qk::kBlock, xd_.data() + mine, hidden_blocks_};
      aq = {aq_.data(), ad_.data(), act_blocks_};
    }
    auto quantize_xb = [&](const float* rows, int64_t count) {
      if (quantize_x) qk::quantize_activations(rows, hidden, count, 0, hidden, xq);
    };
    // Per row at this layer: its query heads, KV groups, MLP neurons, and the inputs of o.
    int64_t* heads_of = reach_.data() + static_cast<size_t>(t) * 4 * max_rows_;
    int64_t* kv_of = heads_of + max_rows_;
    int64_t* mlp_of = kv_of + max_rows_;
    int64_t* o_reach = mlp_of + max_rows_;
    // Zeroes row r's activations x[r, reach_r : its block's end) inside `range` (quantized rows
    // of several widths: a product reads whole blocks) and quantizes each row's inputs in
    // `range` up to that end.
    auto quantize_inputs = [&](float* x, int64_t ldx, const Range& range, const int64_t* reach,
                               const qk::QuantizedActivations& out) {
      if (!quantized) return;
      if (!mixed) {
        if (quantize_x) qk::quantize_activations(x, ldx, n, range.begin, range.size(), out);
        return;
      }
      for (int64_t r = 0; r < n; ++r) {
        const int64_t e = std::min(range.end, round_up(reach[r], qk::kBlock));
        if (e <= range.begin) continue;
        const int64_t z = std::max(range.begin, reach[r]);
        if (z < e) std::fill(x + r * ldx + z, x + r * ldx + e, 0.0f);
        if (quantize_x)
          qk::quantize_activations(x + r * ldx, ldx, 1, range.begin, e - range.begin,
                                   row_of(out, r));
      }
    };
    float* my_po = po_.data() + t * part_stride;
    float* my_pm = pm_.data() + t * part_stride;
    const Range cols = split(hidden, nt, t, 16);
    // xb = src + the partial sums of every thread (none for the embeddings); this thread's
    // columns of the sum also go to dst, the residual stream's next buffer.
    auto gather = [&](const float* src, int64_t src_ld, const float* parts, float* dst) {
      for (int64_t r = 0; r < n; ++r) {
        float* h = xb + r * hidden;
        std::memcpy(h, src + r * src_ld, static_cast<size_t>(hidden) * sizeof(float));
        if (parts != nullptr)
          for (int u = 0; u < nt; ++u) {
            const float* p = parts + u * part_stride + r * hidden;
#pragma omp simd
            for (int64_t i = 0; i < hidden; ++i) h[i] += p[i];
          }
        if (dst != nullptr)
          std::memcpy(dst + r * hidden + cols.begin, h + cols.begin,
                      static_cast<size_t>(cols.size()) * sizeof(float));
      }
    };

    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const EngineLayer& L = weights_.layer(l);
      int64_t kv = 0;  // the widest row's
      for (int64_t r = 0; r < n; ++r) {
        kv_of[r] = (*rows_[r].widths)[l].kv_groups;
        heads_of[r] = kv_of[r] * group;
        o_reach[r] = heads_of[r] * hd;
        kv = std::max(kv, kv_of[r]);
      }
      const int64_t heads = kv * group;

      // h = residual + the previous MLP's output; attention's input xb = rmsnorm(h).
      if (l == 0) {
        for (int64_t r = 0; r < n; ++r) {
          weights_.embedding_row(rows_[r].token, xb + r * hidden);
          if (positions != nullptr)
            add_bias(xb + r * hidden, hidden, 1, positions + rows_[r].position * hidden, hidden);
        }
        for (int64_t r = 0; r < n; ++r)
          std::memcpy(resid_mid + r * hidden + cols.begin, xb + r * hidden + cols.begin,
                      static_cast<size_t>(cols.size()) * sizeof(float));
      } else {
        gather(resid_in, hidden, pm_.data(), resid_mid);
      }
      // A router reads the hidden state entering the layer (thread 0's copy); its choice is read
      // at the MLP step, two barriers later.
      if (router != nullptr && t == 0) {
        int64_t w = widths[l].mlp;
        try {
          w = router->host_mlp_width(l, xb);
        } catch (...) {  // must not leave the pass: the other threads wait at its barriers
          std::lock_guard<std::mutex> lock(router_error_mutex);
          if (!router_error) router_error = std::current_exception();
        }
        routed_mlp_[static_cast<size_t>(l)] = std::clamp<int64_t>(w, 1, L.mlp);
      }
      normalize(xb, n, hidden, L.attn_norm, L.attn_norm_bias, eps, xb);
      // This thread's share of the heads of q, k and v taken as one list (q heads, then k
      // groups, then v groups, so a layer with few KV groups still splits evenly), each rotated
      // and stored into the caches behind its product.
      const Range units = split(heads + 2 * kv, nt, t);
      const Range qh = clip(units, 0, heads), kg = clip(units, heads, kv),
                  vg = clip(units, heads + kv, kv);
      quantize_xb(xb, n);
      // Each of q, k, v over this thread's heads (groups), every row its own up to its widths.
      auto project = [&](const MatrixView& W, const Range& units, const int64_t* reach, float* y,
                         int64_t ldy, const float* bias) {
        for_each_piece(units, reach, n, 1, [&](int64_t p, int64_t q, int64_t r0, int64_t m) {
          product(W, p * hd, (q - p) * hd, hidden, xb + r0 * hidden, hidden, m,
                  y + r0 * ldy + p * hd, ldy, qp, row_of(xq, r0));
          add_bias(y + r0 * ldy + p * hd, ldy, m, bias == nullptr ? nullptr : bias + p * hd,
                   (q - p) * hd);
        });
      };
      project(L.q, qh, heads_of, q_.data(), q_ld, L.q_bias);
      project(L.k, kg, kv_of, k_.data(), kv_ld, L.k_bias);
      project(L.v, vg, kv_of, v_.data(), kv_ld, L.v_bias);
      for (int64_t r = 0; r < n; ++r) {
        const Row& row = rows_[r];
        const Range qr = clip(qh, 0, heads_of[r]), kr = clip(kg, 0, kv_of[r]),
                    vr = clip(vg, 0, kv_of[r]);
        // RoPE (Llama); the GPT family's positions were added to the embeddings.
        const float* cos = cos_table != nullptr ? cos_table + row.position * half : nullptr;
        const float* sin = sin_table != nullptr ? sin_table + row.position * half : nullptr;
        if (cos != nullptr)
          for (int64_t h = qr.begin; h < qr.end; ++h)
            rotate(q_.data() + r * q_ld + h * hd, cos, sin, half);
        for (int64_t g = kr.begin; g < kr.end; ++g) {
          float* k = k_.data() + r * kv_ld + g * hd;
          if (cos != nullptr) rotate(k, cos, sin, half);
          float* keys = row.cache->keys(l, g) + row.position;  // transposed: [hd, capacity]
          for (int64_t i = 0; i < hd; ++i) keys[i * row.cache->capacity_] = k[i];
        }
        for (int64_t g = vr.begin; g < vr.end; ++g)
          std::memcpy(row.cache->values(l, g) + row.position * hd, v_.data() + r * kv_ld + g * hd,
                      static_cast<size_t>(hd) * sizeof(float));
      }
      team_->barrier();
      // This thread's query heads, every row (causal: row r sees positions 0..pos_r), then
      // their part of the o projection: rows h*hd.. of o^T.
      const Range mine = split(heads, nt, t);
      for (int64_t r = 0; r < n; ++r) {
        Row& row = rows_[r];
        for (int64_t h = mine.begin; h < std::min(mine.end, heads_of[r]); ++h)
          attend(q_.data() + r * q_ld + h * hd, row.cache->keys(l, h / group), row.cache->capacity_,
                 row.cache->values(l, h / group), row.position + 1, hd, scale, scores,
                 att_.data() + r * q_ld + h * hd);
      }
      // o reads this thread's heads. Quantized, its share must be whole blocks: with a head_dim
      // that is not a multiple of 32, the threads first meet and then split att by blocks.
      Range o_in{mine.begin * hd, mine.end * hd};
      if (quantized && hd % qk::kBlock != 0) {
        team_->barrier();
        o_in = split(heads * hd, nt, t, qk::kBlock);
      }
      quantize_inputs(att_.data(), q_ld, o_in, o_reach, aq);
      product_t_pieces(L.o_t, o_in, o_reach, in_align, att_.data(), q_ld, n, my_po, hidden, qp, aq);
      if (t == 0) add_bias(my_po, hidden, n, L.o_bias, hidden);  // once, in thread 0's part
      team_->barrier();

      // h = h + attention; the MLP on the first `width` neurons, this thread's block of them,
      // its part of down from rows j0.. of down^T.
      gather(resid_mid, hidden, po_.data(), resid_in);
      normalize(xb, n, hidden, L.mlp_norm, L.mlp_norm_bias, eps, xb);
      int64_t width = 0;  // the widest row's
      for (int64_t r = 0; r < n; ++r) {
        mlp_of[r] =
            router != nullptr ? routed_mlp_[static_cast<size_t>(l)] : (*rows_[r].widths)[l].mlp;
        width = std::max(width, mlp_of[r]);
      }
      const Range nj = split(width, nt, t, quantized ? qk::kBlock : 16);
      quantize_xb(xb, n);
      float* act = up_.data();  // the activations down reads: gelu(up) or silu(gate) * up
      for_each_piece(nj, mlp_of, n, 1, [&](int64_t p, int64_t q, int64_t r0, int64_t m) {
        const int64_t ld = mlp_ld;
        product(L.up, p, q - p, hidden, xb + r0 * hidden, hidden, m, up_.data() + r0 * ld + p, ld,
                qp, row_of(xq, r0));
        if (gpt) {
          add_bias(up_.data() + r0 * ld + p, ld, m, L.up_bias + p, q - p);
          for (int64_t r = r0; r < r0 + m; ++r) gelu(up_.data() + r * ld + p, q - p, gelu_tanh);
        } else {
          product(L.gate, p, q - p, hidden, xb + r0 * hidden, hidden, m, gate_.data() + r0 * ld + p,
                  ld, qp, row_of(xq, r0));
          for (int64_t r = r0; r < r0 + m; ++r)
            swiglu(gate_.data() + r * ld + p, up_.data() + r * ld + p, q - p);
        }
      });
      if (!gpt) act = gate_.data();
      quantize_inputs(act, mlp_ld, nj, mlp_of, aq);
      product_t_pieces(L.down_t, nj, mlp_of, in_align, act, mlp_ld, n, my_pm, hidden, qp, aq);
      if (t == 0) add_bias(my_pm, hidden, n, L.down_bias, hidden);
      team_->barrier();
    }

    // Final norm and LM head for rows [head_from, n), the vocabulary split between threads.
    const int64_t heads_n = n - head_from;
    if (heads_n > 0) {
      gather(resid_in, hidden, pm_.data(), nullptr);
      float* last = xb + head_from * hidden;
      normalize(last, heads_n, hidden, weights_.final_norm(), weights_.final_norm_bias(), eps,
                last);
      const MatrixView& E = weights_.lm_head();
      const Range words = split(vocab, nt, t, 16);
      quantize_xb(last, heads_n);
      product(E, words.begin, words.size(), hidden, last, hidden, heads_n,
              logits_.data() + words.begin, vocab, qp, xq);
    }
  });
  if (router_error) std::rethrow_exception(router_error);
}

}  // namespace flextron::runtime
