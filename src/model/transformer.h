// The decoder-only transformer: one block structure for the Llama family (RMSNorm, RoPE,
// SwiGLU, grouped-query attention) with the parts that differ between families (norm, MLP
// activation/gating, positions, biases) behind small modules, so the GPT family is a variant of
// these blocks rather than a copy.
//
// Parameter names follow HuggingFace Llama ("model.layers.N.self_attn.q_proj.weight", ...), so a
// state dict is exactly what model.safetensors holds.
//
// Elastic execution: every layer can run a prefix of its MLP neurons and of its KV groups (a KV
// head together with its query heads). Prefixes are views of the same weights (narrow), so a
// smaller sub-network costs proportionally less.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "io/safetensors.h"
#include "model/config.h"

namespace flextron::model {

// Widths one layer runs at: the first `mlp` neurons and the first `kv_groups` KV groups.
struct LayerWidths {
  int64_t mlp = 0;
  int64_t kv_groups = 0;
  bool operator==(const LayerWidths& o) const { return mlp == o.mlp && kv_groups == o.kv_groups; }
};

// One LayerWidths per layer. An empty Architecture means the full model.
using Architecture = std::vector<LayerWidths>;

// The full-width architecture of `config`.
Architecture full_architecture(const ModelConfig& config);

// RoPE tables cos/sin(pos * inv_freq_i), inv_freq_i = theta^(-2i/head_dim) rescaled by
// config.rope_scaling, each [positions, head_dim / 2] (positions < 0: max_position_embeddings),
// computed in `dtype`: fp32 is how HF and llama2.c compute them; the models use float64 tables
// rounded to their own dtype (so a float64 model is exact and an fp32 one correctly rounded).
std::pair<torch::Tensor, torch::Tensor> rope_tables(const ModelConfig& config,
                                                    int64_t positions = -1,
                                                    torch::Dtype dtype = torch::kFloat);

// Whether every layer of `arch` has the same widths.
bool is_uniform(const Architecture& arch);

// Throws flextron::Error naming `where` if `arch` has the wrong layer count or widths outside
// [1, full].
void check_architecture(const ModelConfig& config, const Architecture& arch,
                        const std::string& where);

// Sees the activations that importance ranking scores (FLEXTRON.md section 2) as the forward
// pass computes them. Installed with TransformerImpl::set_observer; costs nothing when absent.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // act: [batch, T, width], the activations entering layer l's down projection.
  virtual void mlp_hidden(int64_t layer, const torch::Tensor& act) = 0;
  // heads: [batch, T, heads, head_dim], each query head's attention output before o_proj.
  virtual void attention_heads(int64_t layer, const torch::Tensor& heads) = 0;
};

// What a router decides for one layer (FLEXTRON.md section 5). widths.mlp is the widest neuron
// prefix any token uses; the tensors are optional (undefined = not used):
//  - mlp_mask [batch, T, widths.mlp]: the neurons each token keeps (per-token widths; while a
//    router trains, a straight-through mask whose gradient reaches it, see route/choices.h);
//  - attention_scale, broadcastable to [batch, T, 1]: the chosen choice's probability under a
//    straight-through estimator (value 1, gradient to the router), multiplying the attention
//    output so the router learns from the LM loss.
struct LayerDecision {
  LayerWidths widths;
  torch::Tensor mlp_mask;
  torch::Tensor attention_scale;
};

// Chooses each layer's widths during the forward pass, from the hidden state entering it.
class LayerRouter {
 public:
  virtual ~LayerRouter() = default;
  // hidden: [batch, T, hidden_size] entering layer l; `prefill` is false for the single-token
  // steps of cached decoding (attention widths must then stay what the cache was filled with).
  virtual LayerDecision route(int64_t layer, const torch::Tensor& hidden, bool prefill) = 0;

  // The fast engine's decode step (runtime/fast_decoder.h): one token, in host memory, after a
  // prefill through route(). routes_on_host() says whether this router can; then
  // host_mlp_width(l, hidden) is the MLP width for layer l from the hidden state entering it
  // ([hidden_size] floats), the attention keeping what the prefill chose. It must choose what
  // route() would for the same state, and not throw (the engine calls it inside a pass).
  virtual bool routes_on_host() const { return false; }
  virtual int64_t host_mlp_width(int64_t layer, const float* hidden) {
    (void)layer, (void)hidden;
    return 0;
  }
};

// Keys and values of past positions, one [batch, kv_heads, capacity, head_dim] pair per layer,
// allocated once for a fixed batch and capacity (and for the KV widths of one architecture).
// An undefined pair is allocated by the first forward that reaches the layer, at the KV width
// chosen then (how a router picks attention widths per sequence at prefill).
struct KVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length = 0;  // positions already stored
  int64_t capacity = 0;
};

// One row of a batched decoding step: the cache of that row's sequence (batch 1) and the
// position its token sits at. Rows of one step may sit at different positions.
struct RowCache {
  torch::Tensor* keys = nullptr;    // [1, kv_groups, capacity, head_dim]
  torch::Tensor* values = nullptr;  // same
  int64_t position = 0;
};

// A weight matrix [out, in] with optional bias, applied to a prefix of its rows and columns.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  // y = x W[:out, :in]^T + b[:out]; x's last dim must equal `in`.
  torch::Tensor forward(const torch::Tensor& x, int64_t out, int64_t in);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  torch::Tensor bias;  // undefined when absent
};
TORCH_MODULE(Linear);

// RMSNorm (Llama) or LayerNorm with bias (GPT).
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(int64_t dim, double eps, bool layer_norm);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  torch::Tensor bias;  // LayerNorm only
 private:
  double eps_;
  bool layer_norm_;
};
TORCH_MODULE(Norm);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, int64_t layer);
  // x: [batch, T, hidden]; positions start at `start`. With a cache, keys/values of this call are
  // stored at [start, start+T) and attention covers [0, start+T).
  // rope_cos / rope_sin: [T, head_dim / 2] for these positions (see Rotary).
  torch::Tensor forward(const torch::Tensor& x, int64_t start, int64_t kv_groups,
                        const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                        torch::Tensor* cache_k, torch::Tensor* cache_v);
  // Batched decoding: x [B, 1, hidden], row b's token at rows[b].position with its own cache.
  // rope_cos / rope_sin: [B, 1, 1, head_dim / 2], each row's position.
  torch::Tensor forward_rows(const torch::Tensor& x, int64_t kv_groups,
                             const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                             const std::vector<RowCache>& rows);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  ActivationObserver* observer = nullptr;

 private:
  struct Projected {
    torch::Tensor q, k, v;  // [B, heads or kv_groups, T, head_dim], rotated
  };
  Projected project(const torch::Tensor& x, int64_t kv_groups, const torch::Tensor& rope_cos,
                    const torch::Tensor& rope_sin);
  // softmax(q k^T / sqrt(hd)) v for queries at positions start.. over keys 0..; [B, T, heads*hd].
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       int64_t start) const;
  torch::Tensor output(const torch::Tensor& heads_out);
  ModelConfig config_;
  int64_t layer_;
};
TORCH_MODULE(Attention);

// SwiGLU (Llama): down(silu(gate(x)) * up(x)); the GPT variant drops the gate and uses GELU:
// down(gelu(up(x))), HF's c_fc / c_proj.
class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const ModelConfig& config, int64_t layer);
  // mask: optional [batch, T, width] multiplier of the activations (per-token widths).
  torch::Tensor forward(const torch::Tensor& x, int64_t width,
                        const torch::Tensor& mask = torch::Tensor());
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // gate: Llama only
  ActivationObserver* observer = nullptr;

 private:
  int64_t layer_;
  const char* gelu_approximation_;  // "tanh" or "none" (GPT-2)
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, int64_t layer);
  // x + attention_block + mlp_block, with the router's masks and scales when given.
  torch::Tensor forward(const torch::Tensor& x, int64_t start, const LayerDecision& decision,
                        const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                        torch::Tensor* cache_k, torch::Tensor* cache_v);
  // The two residual halves on their own (the latency profiler times each):
  // x + attn(norm(x)) and h + mlp(norm(h)).
  torch::Tensor attention_block(const torch::Tensor& x, int64_t start, int64_t kv_groups,
                                const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                                torch::Tensor* cache_k, torch::Tensor* cache_v);
  torch::Tensor mlp_block(const torch::Tensor& h, int64_t width);
  // One batched decoding step at `widths` (see AttentionImpl::forward_rows).
  torch::Tensor forward_rows(const torch::Tensor& x, const LayerWidths& widths,
                             const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                             const std::vector<RowCache>& rows);
  Norm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// The trunk ("model." in HF names): embeddings, layers, final norm.
class BackboneImpl : public torch::nn::Module {
 public:
  explicit BackboneImpl(const ModelConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  // GPT-2's learned absolute positions [max_position_embeddings, hidden] ("wpe"); null for
  // Llama, which rotates queries and keys instead.
  torch::nn::Embedding embed_positions{nullptr};
  torch::nn::ModuleList layers;
  Norm norm{nullptr};
};
TORCH_MODULE(Backbone);

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const ModelConfig& config);

  // Logits [batch, T, vocab] for tokens [batch, T] (int64).
  // Training: cache == nullptr, positions 0..T-1, causal mask, autograd as usual.
  // Inference: with a cache, tokens sit at positions cache->length.. and the cache advances.
  // arch: nullptr or empty runs the full model; otherwise each layer's prefix widths.
  // router: when given, it chooses every layer's widths instead of `arch`.
  torch::Tensor forward(const torch::Tensor& tokens, KVCache* cache = nullptr,
                        const Architecture* arch = nullptr, LayerRouter* router = nullptr);

  // One decoding step for several sequences at once, each with its own cache (batch 1, made for
  // `arch`) and length: logits [B, vocab] for tokens[b] at position caches[b]->length, and every
  // cache advances by one. The matrix work is batched; only attention runs row by row. Equals B
  // separate forward() calls (how the server batches requests that share an architecture).
  torch::Tensor decode_rows(const std::vector<int64_t>& tokens, const std::vector<KVCache*>& caches,
                            const Architecture* arch = nullptr);

  // Embedding of tokens [batch, T] sitting at positions start.. (GPT-2 adds its learned
  // position rows; the profiler times it) and the final norm + LM head.
  torch::Tensor embed(const torch::Tensor& tokens, int64_t start = 0);
  torch::Tensor head(const torch::Tensor& hidden);
  // cos/sin rows for positions [start, start + steps), on the model's device and dtype;
  // undefined tensors for GPT-2 (no rotary embedding).
  std::pair<torch::Tensor, torch::Tensor> rope(int64_t start, int64_t steps);
  DecoderLayerImpl& layer(int64_t l);

  // A cache for `batch` sequences of up to `capacity` positions, sized for `arch`'s KV widths.
  // With `lazy`, the layers' tensors are allocated by the first forward (router-chosen widths).
  KVCache make_cache(int64_t batch, int64_t capacity, const Architecture* arch = nullptr,
                     bool lazy = false) const;

  // Routes every layer's ranking activations to `observer` (nullptr to stop); not owned.
  void set_observer(ActivationObserver* observer);

  // Parameters by HF name (tied models have no lm_head.weight).
  io::TensorMap state() const;
  // Copies `tensors` into the parameters (converting dtype). Throws flextron::Error naming
  // `where` for a missing tensor or a shape that disagrees with the config.
  void load_state(const io::TensorMap& tensors, const std::string& where);

  const ModelConfig& config() const { return config_; }
  int64_t parameter_count() const;
  torch::Device device() const;
  torch::Dtype dtype() const;

  Backbone model{nullptr};
  Linear lm_head{nullptr};  // null when tied to the embedding

 private:
  ModelConfig config_;
  Architecture full_arch_;  // what a null architecture means, built once
  // Rotary tables cos/sin(pos * inv_freq), [positions so far, head_dim/2] (Llama only), made
  // by ensure_rope on first use on the model's device.
  // Plain float64 members, not buffers: a bf16 model must not round its angles.
  void ensure_rope(int64_t positions);
  torch::Tensor rope_cos_, rope_sin_;
};
TORCH_MODULE(Transformer);

}  // namespace flextron::model
