// Compiled without the precompiled header (only this file takes -fopenmp, see CMakeLists.txt),
// so the LibTorch headers that model/transformer.h relies on come first.
#include <torch/torch.h>

#include "runtime/fast_decoder.h"

#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include <ATen/Parallel.h>
#include <cblas.h>

#include "core/error.h"

namespace flextron::runtime {

namespace {

constexpr const char* kWhere = "fast runtime";

// OpenBLAS must not start its own threads inside our parallel region: each of our threads
// already runs its share of a product. Restored afterwards for LibTorch's own BLAS calls.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

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

// HF's rotate-half RoPE on one head: pairs (i, i + half), (x1, x2) -> (x1 c - x2 s, x2 c + x1 s).
void rotate(float* x, const float* cos, const float* sin, int64_t half) {
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const float x1 = x[i], x2 = x[i + half];
    x[i] = x1 * cos[i] - x2 * sin[i];
    x[i + half] = x2 * cos[i] + x1 * sin[i];
  }
}

// out = sum_s p_s v_s with p = softmax(q . k_s * scale) over positions s < span; keys and values
// [span, hd] contiguous (one KV group of a cache).
void attend(const float* q, const float* keys, const float* values, int64_t span, int64_t hd,
            float scale, float* scores, float* out) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < span; ++s) {
    const float* k = keys + s * hd;
    float d = 0.0f;
#pragma omp simd reduction(+ : d)
    for (int64_t i = 0; i < hd; ++i) d += q[i] * k[i];
    d *= scale;
    scores[s] = d;
    top = std::max(top, d);
  }
  float sum = 0.0f;
  for (int64_t s = 0; s < span; ++s) {
    scores[s] = std::exp(scores[s] - top);
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
    : weights_(model), full_(model::full_architecture(model.config())) {
  const auto& c = weights_.config();
  threads_ = options.threads > 0 ? options.threads : std::max(1, at::get_num_threads());
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
  q_.resize(rows * q_dim);
  att_.resize(rows * q_dim);
  k_.resize(rows * kv_dim);
  v_.resize(rows * kv_dim);
  gate_.resize(rows * mlp);
  up_.resize(rows * mlp);
  logits_.resize(rows * c.vocab_size);
  xb_.resize(static_cast<size_t>(threads_) * rows * c.hidden_size);
  scores_.resize(static_cast<size_t>(threads_) * c.max_position_embeddings);
}

int64_t FastDecoder::scratch_bytes() const {
  size_t n = 0;
  for (const auto* b : {&x_, &q_, &k_, &v_, &att_, &gate_, &up_, &logits_, &xb_, &scores_})
    n += b->size();
  return static_cast<int64_t>(n * sizeof(float));
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
    for (int64_t r = 0; r < n; ++r) rows_[r] = Row{tokens[done + r], &cache, cache.length_ + r};
    const bool last = done + n == count;
    // Only the last token's logits are needed, unless the caller wants every row's.
    const int64_t head_from = all_logits ? 0 : (last ? n - 1 : n);
    run(n, head_from, widths);
    cache.length_ += n;
    if (all_logits)
      std::memcpy(all_logits + done * vocab, logits_.data(),
                  static_cast<size_t>(n * vocab) * sizeof(float));
    done += n;
  }
  return all_logits ? all_logits + (count - 1) * vocab : logits_.data();
}

const float* FastDecoder::decode(int64_t token, EngineCache& cache,
                                 const model::Architecture& arch) {
  const auto& widths = resolve(arch);
  check_cache(cache, widths, 1);
  rows_[0] = Row{token, &cache, cache.length_};
  run(1, 0, widths);
  cache.length_ += 1;
  return logits_.data();
}

const float* FastDecoder::decode_batch(const std::vector<int64_t>& tokens,
                                       const std::vector<EngineCache*>& caches,
                                       const model::Architecture& arch) {
  const auto n = static_cast<int64_t>(tokens.size());
  if (n == 0 || caches.size() != tokens.size())
    fail(kWhere, std::to_string(tokens.size()) + " tokens for " + std::to_string(caches.size()) +
                     " caches");
  if (n > max_rows_)
    fail(kWhere, std::to_string(n) + " sequences in one step, the engine was made for at most " +
                     std::to_string(max_rows_));
  const auto& widths = resolve(arch);
  for (int64_t b = 0; b < n; ++b) {
    check_cache(*caches[b], widths, 1);
    for (int64_t a = 0; a < b; ++a)
      if (caches[a] == caches[b]) fail(kWhere, "one cache given for two sequences of a batch");
    rows_[b] = Row{tokens[b], caches[b], caches[b]->length_};
  }
  run(n, 0, widths);
  for (auto* cache : caches) cache->length_ += 1;
  return logits_.data();
}

void FastDecoder::run(int64_t n, int64_t head_from, const model::Architecture& widths) {
  const auto& c = config();
  const int64_t hidden = c.hidden_size, hd = c.head_dim(), half = hd / 2;
  const int64_t group = c.group_size(), vocab = c.vocab_size;
  const int64_t q_ld = static_cast<int64_t>(q_.size()) / max_rows_;
  const int64_t kv_ld = static_cast<int64_t>(k_.size()) / max_rows_;
  const int64_t mlp_ld = static_cast<int64_t>(gate_.size()) / max_rows_;
  const auto eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* cos_table = weights_.rope_cos();
  const float* sin_table = weights_.rope_sin();
  for (int64_t r = 0; r < n; ++r)
    if (rows_[r].token < 0 || rows_[r].token >= vocab)
      fail(kWhere, "token " + std::to_string(rows_[r].token) + " outside the vocabulary of " +
                       std::to_string(vocab));
  SingleThreadedBlas single_threaded_blas;
  float* x = x_.data();

#pragma omp parallel num_threads(threads_)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    float* xb = xb_.data() + static_cast<size_t>(t) * max_rows_ * hidden;
    float* scores = scores_.data() + static_cast<size_t>(t) * c.max_position_embeddings;

    const Range mine = split(n, nt, t);
    for (int64_t r = mine.begin; r < mine.end; ++r)
      std::memcpy(x + r * hidden, weights_.embedding() + rows_[r].token * hidden,
                  static_cast<size_t>(hidden) * sizeof(float));
#pragma omp barrier

    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const EngineLayer& L = weights_.layer(l);
      const int64_t kv = widths[l].kv_groups, heads = kv * group, width = widths[l].mlp;

      // Attention: this thread's query heads and KV groups, rotated, K/V into the caches.
      rmsnorm(x, n, hidden, L.attn_norm, eps, xb);
      const Range qh = split(heads, nt, t), kg = split(kv, nt, t);
      matmul(xb, hidden, n, hidden, L.q.data + qh.begin * hd * L.q.ld, L.q.ld, qh.size() * hd,
             q_.data() + qh.begin * hd, q_ld, 0.0f);
      matmul(xb, hidden, n, hidden, L.k.data + kg.begin * hd * L.k.ld, L.k.ld, kg.size() * hd,
             k_.data() + kg.begin * hd, kv_ld, 0.0f);
      matmul(xb, hidden, n, hidden, L.v.data + kg.begin * hd * L.v.ld, L.v.ld, kg.size() * hd,
             v_.data() + kg.begin * hd, kv_ld, 0.0f);
      for (int64_t r = 0; r < n; ++r) {
        const Row& row = rows_[r];
        const float* cos = cos_table + row.position * half;
        const float* sin = sin_table + row.position * half;
        for (int64_t h = qh.begin; h < qh.end; ++h)
          rotate(q_.data() + r * q_ld + h * hd, cos, sin, half);
        for (int64_t g = kg.begin; g < kg.end; ++g) {
          float* k = k_.data() + r * kv_ld + g * hd;
          rotate(k, cos, sin, half);
          const auto bytes = static_cast<size_t>(hd) * sizeof(float);
          std::memcpy(row.cache->keys(l, g) + row.position * hd, k, bytes);
          std::memcpy(row.cache->values(l, g) + row.position * hd, v_.data() + r * kv_ld + g * hd,
                      bytes);
        }
      }
#pragma omp barrier
      // (row, head) pairs dealt round-robin: later rows of a causal chunk see more positions.
      for (int64_t p = t; p < n * heads; p += nt) {
        const int64_t r = p / heads, h = p % heads, g = h / group;
        Row& row = rows_[r];
        attend(q_.data() + r * q_ld + h * hd, row.cache->keys(l, g), row.cache->values(l, g),
               row.position + 1, hd, scale, scores, att_.data() + r * q_ld + h * hd);
      }
#pragma omp barrier
      const Range out = split(hidden, nt, t, 16);
      matmul(att_.data(), q_ld, n, heads * hd, L.o.data + out.begin * L.o.ld, L.o.ld, out.size(),
             x + out.begin, hidden, 1.0f);
#pragma omp barrier

      // MLP on the first `width` neurons.
      rmsnorm(x, n, hidden, L.mlp_norm, eps, xb);
      const Range nj = split(width, nt, t, 16);
      matmul(xb, hidden, n, hidden, L.gate.data + nj.begin * L.gate.ld, L.gate.ld, nj.size(),
             gate_.data() + nj.begin, mlp_ld, 0.0f);
      matmul(xb, hidden, n, hidden, L.up.data + nj.begin * L.up.ld, L.up.ld, nj.size(),
             up_.data() + nj.begin, mlp_ld, 0.0f);
      for (int64_t r = 0; r < n; ++r)
        swiglu(gate_.data() + r * mlp_ld + nj.begin, up_.data() + r * mlp_ld + nj.begin, nj.size());
#pragma omp barrier
      matmul(gate_.data(), mlp_ld, n, width, L.down.data + out.begin * L.down.ld, L.down.ld,
             out.size(), x + out.begin, hidden, 1.0f);
#pragma omp barrier
    }

    // Final norm and LM head for rows [head_from, n), the vocabulary split between threads.
    const int64_t heads_n = n - head_from;
    if (heads_n > 0) {
      rmsnorm(x + head_from * hidden, heads_n, hidden, weights_.final_norm(), eps, xb);
      const MatrixView& E = weights_.lm_head();
      const Range words = split(vocab, nt, t, 16);
      matmul(xb, hidden, heads_n, hidden, E.data + words.begin * E.ld, E.ld, words.size(),
             logits_.data() + words.begin, vocab, 0.0f);
    }
  }
}

}  // namespace flextron::runtime
