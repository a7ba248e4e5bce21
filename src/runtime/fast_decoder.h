// The fast CPU inference engine (both families): no autograd and no tensor per operation.
// Weights are laid out once (runtime/engine_weights.h), the KV cache is one block per sequence,
// and every scratch buffer is allocated once when the engine is made, for the full widths, so
// any architecture runs without an allocation per token.
//
// One pass feeds R rows (the tokens of a prompt chunk, or one token of each of R sequences)
// through every layer in one run of the engine's thread team (runtime/thread_team.h), the
// threads meeting at a barrier between dependent steps (3 per layer). At a layer's widths (kv KV
// groups = kv * group query heads, k MLP neurons):
//   h = x + the previous MLP's partial sums     each thread a private copy; its columns of h go
//   xb = rmsnorm(h) * w                         to the residual stream's next buffer
//   q, k, v = xb Wq[:heads*hd]^T, ...           threads split the heads; RoPE and the cache
//                                               write fused behind each product      | barrier
//   att = softmax(q k^T / sqrt(hd)) v           threads split the heads (causal rows)
//   p_o = att[:, mine] o^T[mine, :]             each thread its heads' part of o
//                                                                                    | barrier
//   h += sum p_o; xb = rmsnorm(h) * w
//   a = silu(xb Wg[mine]^T) * (xb Wu[mine]^T)   threads split the k neurons
//   p_d = a[:, mine] down^T[mine, :]            each thread its neurons' part of down | barrier
//   logits = rmsnorm(x + sum p_d) * w  E^T      threads split the vocabulary
// Every product reads a contiguous block of rows (o and down are stored transposed, see
// engine_weights.h): OpenBLAS calls (sgemv for one row, sgemm for more) running single-threaded
// inside the region.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/transformer.h"
#include "runtime/blas_kernels.h"
#include "runtime/engine_weights.h"
#include "runtime/thread_team.h"

namespace flextron::runtime {

// Keys and values of one sequence for one architecture's KV widths: per layer, keys
// [kv_groups, head_dim, capacity] (transposed, for the score loop) then values [kv_groups,
// capacity, head_dim], all in one allocation.
class EngineCache {
 public:
  int64_t length() const { return length_; }  // positions already stored
  int64_t capacity() const { return capacity_; }
  int64_t kv_groups(int64_t layer) const { return kv_[static_cast<size_t>(layer)]; }
  int64_t bytes() const { return static_cast<int64_t>(data_.size() * sizeof(float)); }
  // Keys and values of positions [0, length()), layer after layer: for checks and tests.
  std::vector<float> stored() const;
  // Starts a new sequence in the same memory.
  void reset() { length_ = 0; }
  // Forgets every position from `length` on (0 <= length <= length()), so that the next token
  // goes to position `length` again: how a timer repeats one decode step at a fixed context.
  void truncate(int64_t length);

 private:
  friend class FastDecoder;
  float* keys(int64_t layer, int64_t group) {
    return data_.data() + offset_[static_cast<size_t>(layer)] + group * capacity_ * head_dim_;
  }
  float* values(int64_t layer, int64_t group) {
    return keys(layer, group) + kv_[static_cast<size_t>(layer)] * capacity_ * head_dim_;
  }
  std::vector<float> data_;
  std::vector<int64_t> offset_, kv_;
  int64_t capacity_ = 0, head_dim_ = 0, length_ = 0;
};

struct EngineOptions {
  int threads = 0;        // 0: LibTorch's intra-op thread count (what --threads sets)
  int64_t max_rows = 64;  // rows per pass (prompt tokens, batched sequences): bounds the buffers
  // Weights as fp32 or as blocks (q8_0 / q4_0, runtime/quant_kernels.h): quantized, every
  // product quantizes its activations per block of 32 too, as llama.cpp does.
  qk::WeightFormat format = qk::WeightFormat::F32;
  // Quantized only: keep the activations in fp32 and multiply by the dequantized weights (slow;
  // equals the torch forward on the dequantized model, which tests check).
  bool exact = false;
};

class FastDecoder {
 public:
  // Throws flextron::Error for a model the engine does not run (see EngineWeights).
  explicit FastDecoder(const model::TransformerImpl& model, const EngineOptions& options = {});

  const model::ModelConfig& config() const { return weights_.config(); }
  const EngineWeights& weights() const { return weights_; }
  int threads() const { return threads_; }
  int64_t max_rows() const { return max_rows_; }
  // Bytes of the scratch buffers (everything the engine holds besides weights and caches).
  int64_t scratch_bytes() const;

  // A cache for one sequence of up to `capacity` positions at `arch`'s KV widths (empty = full).
  EngineCache make_cache(int64_t capacity, const model::Architecture& arch = {}) const;

  // Feeds `count` tokens at positions cache.length().. in passes of max_rows rows, advances the
  // cache, and returns the logits after the last token ([vocab], valid until the next call).
  // all_logits, when given, receives every token's logits ([count, vocab]).
  // arch: empty = full model; its KV widths must be the cache's. Throws flextron::Error for an
  // architecture outside the model, a cache made for other KV widths, or positions past the
  // cache's capacity.
  const float* prefill(const int64_t* tokens, int64_t count, EngineCache& cache,
                       const model::Architecture& arch = {}, float* all_logits = nullptr);
  const float* prefill(const std::vector<int64_t>& tokens, EngineCache& cache,
                       const model::Architecture& arch = {}, float* all_logits = nullptr) {
    return prefill(tokens.data(), static_cast<int64_t>(tokens.size()), cache, arch, all_logits);
  }
  // As prefill() with all_logits for 1..max_rows() tokens, but every row's products are run as
  // a pass of that row alone runs them (matrix-vector, not matrix-matrix, whose other order of
  // summation changes the last bits): row i's logits are bit for bit what decode() gives after
  // the tokens before it, so a speculative verifier's greedy choices are plain decoding's. The
  // weights are re-read per row (from the CPU's caches for all rows but the first). Returns
  // all_logits ([count, vocab]).
  const float* verify(const int64_t* tokens, int64_t count, EngineCache& cache,
                      const model::Architecture& arch, float* all_logits);
  // One token at position cache.length(): logits [vocab]. With a router (routes_on_host(), see
  // model::LayerRouter), it picks each layer's MLP width from the hidden state entering the
  // layer, as the torch forward would; `arch` then gives the KV widths (the cache's).
  const float* decode(int64_t token, EngineCache& cache, const model::Architecture& arch = {},
                      model::LayerRouter* router = nullptr);
  // A cache for `model`'s KV cache `from` (batch 1, as a routed torch prefill filled it): the
  // same KV widths and the same positions [0, from.length), for decoding on to `capacity`.
  EngineCache cache_from(const model::KVCache& from, int64_t capacity) const;
  // One decoding step of several sequences at once (up to max_rows), each at its own position
  // with its own cache made for `arch`: logits [B, vocab], row b for tokens[b]. The matrix work
  // is one batched product per matrix; attention runs per row over that row's cache.
  const float* decode_batch(const std::vector<int64_t>& tokens,
                            const std::vector<EngineCache*>& caches,
                            const model::Architecture& arch = {});
  // As decode_batch, each sequence at its own architecture (archs[b]; nullptr = full), its cache
  // made for that architecture's KV widths. Nested widths make a narrower row's weights a prefix
  // of a wider row's: every product runs once over the columns all rows share, then over each
  // further piece for the rows that reach it, so a mixed batch reads every weight once and each
  // row computes what it computes alone (in another order of summation: equal to 1e-5).
  const float* decode_batch(const std::vector<int64_t>& tokens,
                            const std::vector<EngineCache*>& caches,
                            const std::vector<const model::Architecture*>& archs);

 private:
  struct Row {
    int64_t token = 0;
    EngineCache* cache = nullptr;
    int64_t position = 0;
    const model::Architecture* widths = nullptr;  // resolved: one entry per layer
  };
  const model::Architecture& resolve(const model::Architecture& arch) const;
  void check_cache(const EngineCache& cache, const model::Architecture& widths,
                   int64_t steps) const;
  // One pass over rows_[0, n), each at its own widths; logits of rows [head_from, n) into
  // logits_. A router (n == 1) picks the MLP widths instead of the row's.
  // per_row: each row's products alone (see verify).
  void run(int64_t n, int64_t head_from, model::LayerRouter* router = nullptr,
           bool per_row = false);

  SingleThreadedBlas single_threaded_blas_;  // for the engine's lifetime
  EngineWeights weights_;
  model::Architecture full_;
  int threads_ = 1;
  std::unique_ptr<ThreadTeam> team_;  // runs every pass
  int64_t max_rows_ = 64;
  std::vector<Row> rows_;
  // Shared scratch, [max_rows, width] each at the full widths; xb_ and scores_ per thread.
  std::vector<float> x_, x2_, q_, k_, v_, att_, gate_, up_, logits_, xb_, scores_;
  std::vector<float> po_, pm_;  // per thread: its partial sums of the o and down products
  bool exact_ = false;
  // Quantized only: per thread the blocks of its xb rows (xq_, xd_), shared the blocks of att /
  // the MLP activations (aq_, ad_), per thread the exact path's dequantized rows (deq_).
  int64_t hidden_blocks_ = 0, act_blocks_ = 0;
  std::vector<int8_t> xq_, aq_;
  std::vector<float> xd_, ad_, deq_;
  std::vector<int64_t> routed_mlp_;  // per layer: the router's MLP width in this pass
  std::vector<int64_t> reach_;       // per thread: each row's widths at the current layer
};

}  // namespace flextron::runtime
