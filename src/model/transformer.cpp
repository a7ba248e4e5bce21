#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/torch.h>

#include "core/error.h"

namespace flextron::model {

namespace {

std::string shape_str(c10::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Reduced-precision activations (bf16/f16) are normalised and soft-maxed in fp32; fp32 and
// fp64 keep their own precision.
torch::ScalarType accumulation_type(const torch::Tensor& t) {
  const auto type = t.scalar_type();
  return type == torch::kBFloat16 || type == torch::kHalf ? torch::kFloat : type;
}

// HF's rotate-half convention: the pairs are (i, i + head_dim/2), not adjacent elements.
// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin). t: [B, H, T, head_dim]; cos/sin: [T, hd/2].
torch::Tensor apply_rotary(const torch::Tensor& t, const torch::Tensor& cos,
                           const torch::Tensor& sin) {
  const int64_t half = t.size(-1) / 2;
  auto x1 = t.narrow(-1, 0, half);
  auto x2 = t.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

}  // namespace

Architecture full_architecture(const ModelConfig& config) {
  Architecture arch;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    arch.push_back(LayerWidths{config.layer_mlp(l), config.layer_kv_heads(l)});
  return arch;
}

bool is_uniform(const Architecture& arch) {
  for (const auto& w : arch)
    if (!(w == arch.front())) return false;
  return true;
}

void check_architecture(const ModelConfig& config, const Architecture& arch,
                        const std::string& where) {
  if (static_cast<int64_t>(arch.size()) != config.num_hidden_layers)
    fail(where, "architecture has " + std::to_string(arch.size()) + " layers, the model has " +
                    std::to_string(config.num_hidden_layers));
  for (size_t l = 0; l < arch.size(); ++l) {
    const auto& w = arch[l];
    const int64_t mlp = config.layer_mlp(static_cast<int64_t>(l));
    const int64_t kv = config.layer_kv_heads(static_cast<int64_t>(l));
    if (w.mlp < 1 || w.mlp > mlp)
      fail(where, "layer " + std::to_string(l) + ": MLP width " + std::to_string(w.mlp) +
                      " outside [1, " + std::to_string(mlp) + "]");
    if (w.kv_groups < 1 || w.kv_groups > kv)
      fail(where, "layer " + std::to_string(l) + ": attention width " +
                      std::to_string(w.kv_groups) + " KV groups outside [1, " + std::to_string(kv) +
                      "]");
  }
}

// ---------------------------------------------------------------------------------------------
LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  // Same initialisation scale as torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight",
                              torch::empty({out_features, in_features}).uniform_(-bound, bound));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x, int64_t out, int64_t in) {
  // Prefix views: W[:out] is contiguous; W[:, :in] keeps the row stride (BLAS's lda), no copy.
  auto w = weight.narrow(0, 0, out).narrow(1, 0, in);
  return bias.defined() ? torch::linear(x, w, bias.narrow(0, 0, out)) : torch::linear(x, w);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  return bias.defined() ? torch::linear(x, weight, bias) : torch::linear(x, weight);
}

// ---------------------------------------------------------------------------------------------
NormImpl::NormImpl(int64_t dim, double eps, bool layer_norm) : eps_(eps), layer_norm_(layer_norm) {
  weight = register_parameter("weight", torch::ones({dim}));
  if (layer_norm) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  if (layer_norm_) return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps_);
  // RMSNorm, computed in at least fp32 whatever the storage dtype: x / sqrt(mean(x^2) + eps) * w.
  auto x32 = x.to(accumulation_type(x));
  auto normed = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * normed.to(x.scalar_type());
}

// ---------------------------------------------------------------------------------------------
AttentionImpl::AttentionImpl(const ModelConfig& config, int64_t layer)
    : config_(config), layer_(layer) {
  const int64_t hd = config.head_dim();
  const int64_t kv_dim = config.layer_kv_heads(layer) * hd;
  const int64_t q_dim = kv_dim * config.group_size();
  const bool qkv_bias = config.has_qkv_bias();
  q_proj = register_module("q_proj", Linear(config.hidden_size, q_dim, qkv_bias));
  k_proj = register_module("k_proj", Linear(config.hidden_size, kv_dim, qkv_bias));
  v_proj = register_module("v_proj", Linear(config.hidden_size, kv_dim, qkv_bias));
  o_proj = register_module("o_proj", Linear(q_dim, config.hidden_size, config.has_o_bias()));
}

AttentionImpl::Projected AttentionImpl::project(const torch::Tensor& x, int64_t kv_groups,
                                                const torch::Tensor& rope_cos,
                                                const torch::Tensor& rope_sin) {
  const int64_t batch = x.size(0), steps = x.size(1), hidden = x.size(2);
  const int64_t hd = config_.head_dim();
  const int64_t heads = kv_groups * config_.group_size();  // query heads of the kept KV groups
  // [B, T, heads * hd] -> [B, heads, T, hd]; head h's rows are h*hd .. (h+1)*hd.
  Projected p;
  p.q = q_proj->forward(x, heads * hd, hidden).view({batch, steps, heads, hd}).transpose(1, 2);
  p.k = k_proj->forward(x, kv_groups * hd, hidden)
            .view({batch, steps, kv_groups, hd})
            .transpose(1, 2);
  p.v = v_proj->forward(x, kv_groups * hd, hidden)
            .view({batch, steps, kv_groups, hd})
            .transpose(1, 2);
  if (rope_cos.defined()) {
    p.q = apply_rotary(p.q, rope_cos, rope_sin);
    p.k = apply_rotary(p.k, rope_cos, rope_sin);
  }
  return p;
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v, int64_t start) const {
  const int64_t batch = q.size(0), steps = q.size(2), hd = q.size(3);
  const int64_t kv_groups = k.size(1), rep = config_.group_size(), span = k.size(2);
  // Grouped-query attention without repeating K/V: query heads g*rep .. g*rep+rep-1 share KV
  // head g, so fold them into the row dimension: [B, kv, rep*T, hd] x [B, kv, hd, S].
  auto qg = q.reshape({batch, kv_groups, rep * steps, hd});
  auto scores = torch::matmul(qg, k.transpose(2, 3)) * (1.0 / std::sqrt(static_cast<double>(hd)));
  scores = scores.view({batch, kv_groups, rep, steps, span});
  if (steps > 1) {
    // Query t sits at position start+t and may see keys s <= start+t.
    auto future =
        torch::ones({steps, span}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
            .triu(start + 1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  auto probs = torch::softmax(scores, -1, accumulation_type(scores)).to(v.scalar_type());
  auto out =
      torch::matmul(probs.view({batch, kv_groups, rep * steps, span}), v);  // [B,kv,rep*T,hd]
  return out.view({batch, kv_groups, rep, steps, hd})
      .permute({0, 3, 1, 2, 4})
      .reshape({batch, steps, kv_groups * rep * hd});
}

torch::Tensor AttentionImpl::output(const torch::Tensor& heads_out) {
  const int64_t width = heads_out.size(2), hd = config_.head_dim();
  if (observer != nullptr)
    observer->attention_heads(
        layer_, heads_out.view({heads_out.size(0), heads_out.size(1), width / hd, hd}));
  return o_proj->forward(heads_out, config_.hidden_size, width);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, int64_t start, int64_t kv_groups,
                                     const torch::Tensor& rope_cos, const torch::Tensor& rope_sin,
                                     torch::Tensor* cache_k, torch::Tensor* cache_v) {
  auto p = project(x, kv_groups, rope_cos, rope_sin);
  if (cache_k != nullptr) {
    const int64_t steps = x.size(1);
    cache_k->narrow(2, start, steps).copy_(p.k);
    cache_v->narrow(2, start, steps).copy_(p.v);
    p.k = cache_k->narrow(2, 0, start + steps);
    p.v = cache_v->narrow(2, 0, start + steps);
  }
  return output(attend(p.q, p.k, p.v, start));
}

torch::Tensor AttentionImpl::forward_rows(const torch::Tensor& x, int64_t kv_groups,
                                          const torch::Tensor& rope_cos,
                                          const torch::Tensor& rope_sin,
                                          const std::vector<RowCache>& rows) {
  auto p = project(x, kv_groups, rope_cos, rope_sin);
  // Each row attends over its own past: [1, kv, position + 1, hd] of its cache.
  std::vector<torch::Tensor> outs;
  outs.reserve(rows.size());
  for (size_t b = 0; b < rows.size(); ++b) {
    const auto i = static_cast<int64_t>(b);
    const auto& row = rows[b];
    row.keys->narrow(2, row.position, 1).copy_(p.k.narrow(0, i, 1));
    row.values->narrow(2, row.position, 1).copy_(p.v.narrow(0, i, 1));
    outs.push_back(attend(p.q.narrow(0, i, 1), row.keys->narrow(2, 0, row.position + 1),
                          row.values->narrow(2, 0, row.position + 1), row.position));
  }
  return output(torch::cat(outs, 0));
}

// ---------------------------------------------------------------------------------------------
MlpImpl::MlpImpl(const ModelConfig& config, int64_t layer)
    : layer_(layer), gelu_approximation_(config.gelu_tanh ? "tanh" : "none") {
  const bool gpt = config.family == Family::Gpt2;
  const int64_t neurons = config.layer_mlp(layer);
  if (!gpt) gate_proj = register_module("gate_proj", Linear(config.hidden_size, neurons, false));
  up_proj = register_module("up_proj", Linear(config.hidden_size, neurons, gpt));
  down_proj = register_module("down_proj", Linear(neurons, config.hidden_size, gpt));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x, int64_t width, const torch::Tensor& mask) {
  const int64_t hidden = x.size(-1);
  auto up = up_proj->forward(x, width, hidden);
  auto act = gate_proj ? torch::silu(gate_proj->forward(x, width, hidden)) * up
                       : torch::gelu(up, gelu_approximation_);
  if (mask.defined()) act = act * mask;
  if (observer != nullptr) observer->mlp_hidden(layer_, act);
  return down_proj->forward(act, hidden, width);
}

// ---------------------------------------------------------------------------------------------
DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& config, int64_t layer) {
  const bool layer_norm = config.family == Family::Gpt2;
  input_layernorm =
      register_module("input_layernorm", Norm(config.hidden_size, config.rms_norm_eps, layer_norm));
  self_attn = register_module("self_attn", Attention(config, layer));
  post_attention_layernorm = register_module(
      "post_attention_layernorm", Norm(config.hidden_size, config.rms_norm_eps, layer_norm));
  mlp = register_module("mlp", Mlp(config, layer));
}

torch::Tensor DecoderLayerImpl::attention_block(const torch::Tensor& x, int64_t start,
                                                int64_t kv_groups, const torch::Tensor& rope_cos,
                                                const torch::Tensor& rope_sin,
                                                torch::Tensor* cache_k, torch::Tensor* cache_v) {
  return x + self_attn->forward(input_layernorm->forward(x), start, kv_groups, rope_cos, rope_sin,
                                cache_k, cache_v);
}

torch::Tensor DecoderLayerImpl::mlp_block(const torch::Tensor& h, int64_t width) {
  return h + mlp->forward(post_attention_layernorm->forward(h), width);
}

torch::Tensor DecoderLayerImpl::forward_rows(const torch::Tensor& x, const LayerWidths& widths,
                                             const torch::Tensor& rope_cos,
                                             const torch::Tensor& rope_sin,
                                             const std::vector<RowCache>& rows) {
  auto h = x + self_attn->forward_rows(input_layernorm->forward(x), widths.kv_groups, rope_cos,
                                       rope_sin, rows);
  return mlp_block(h, widths.mlp);
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, int64_t start,
                                        const LayerDecision& decision,
                                        const torch::Tensor& rope_cos,
                                        const torch::Tensor& rope_sin, torch::Tensor* cache_k,
                                        torch::Tensor* cache_v) {
  if (!decision.attention_scale.defined() && !decision.mlp_mask.defined()) {
    return mlp_block(
        attention_block(x, start, decision.widths.kv_groups, rope_cos, rope_sin, cache_k, cache_v),
        decision.widths.mlp);
  }
  auto attn = self_attn->forward(input_layernorm->forward(x), start, decision.widths.kv_groups,
                                 rope_cos, rope_sin, cache_k, cache_v);
  if (decision.attention_scale.defined()) attn = attn * decision.attention_scale;
  auto h = x + attn;
  return h +
         mlp->forward(post_attention_layernorm->forward(h), decision.widths.mlp, decision.mlp_mask);
}

// ---------------------------------------------------------------------------------------------
BackboneImpl::BackboneImpl(const ModelConfig& config) {
  embed_tokens =
      register_module("embed_tokens", torch::nn::Embedding(config.vocab_size, config.hidden_size));
  if (config.gpt())
    embed_positions =
        register_module("embed_positions",
                        torch::nn::Embedding(config.max_position_embeddings, config.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) layers->push_back(DecoderLayer(config, l));
  norm = register_module(
      "norm", Norm(config.hidden_size, config.rms_norm_eps, config.family == Family::Gpt2));
}

std::pair<torch::Tensor, torch::Tensor> rope_tables(const ModelConfig& config, int64_t positions,
                                                    torch::Dtype dtype) {
  const int64_t hd = config.head_dim();
  if (positions < 0) positions = config.max_position_embeddings;
  const auto options = torch::TensorOptions().dtype(dtype);
  auto inv_freq = 1.0 / torch::pow(torch::scalar_tensor(config.rope_theta, options),
                                   torch::arange(0, hd, 2, options) / static_cast<double>(hd));
  // Long-context rescaling (config.h RopeScaling), element-wise as HF computes it.
  const auto& scaling = config.rope_scaling;
  if (scaling.kind == RopeScaling::Kind::Linear) inv_freq = inv_freq / scaling.factor;
  if (scaling.kind == RopeScaling::Kind::Llama3) {
    const double context = static_cast<double>(scaling.original_max_position_embeddings);
    const double low_wavelen = context / scaling.low_freq_factor;
    const double high_wavelen = context / scaling.high_freq_factor;
    auto wavelen = (2 * M_PI) / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq);
    auto smooth = (context / wavelen - scaling.low_freq_factor) /
                  (scaling.high_freq_factor - scaling.low_freq_factor);
    auto blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled;
    auto medium = wavelen.ge(high_wavelen).logical_and(wavelen.le(low_wavelen));
    inv_freq = torch::where(medium, blended, scaled);
  }
  auto angles = torch::outer(torch::arange(positions, options), inv_freq);
  return {torch::cos(angles), torch::sin(angles)};
}

// ---------------------------------------------------------------------------------------------
TransformerImpl::TransformerImpl(const ModelConfig& config) : config_(config) {
  config.validate("model config");
  model = register_module("model", Backbone(config));
  if (!config.tie_word_embeddings)
    lm_head = register_module("lm_head", Linear(config.hidden_size, config.vocab_size, false));
  full_arch_ = full_architecture(config);
  if (!config.gpt()) ensure_rope(1);  // the first 4096 positions, before any concurrent use
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& tokens, KVCache* cache,
                                       const Architecture* arch, LayerRouter* router) {
  if (tokens.dim() != 2)
    fail("forward", "tokens must be [batch, T], got " + shape_str(tokens.sizes()));
  const int64_t steps = tokens.size(1);
  const int64_t start = cache ? cache->length : 0;
  const int64_t limit = cache ? cache->capacity : config_.max_position_embeddings;
  if (start + steps > limit)
    fail("forward", "positions " + std::to_string(start) + ".." +
                        std::to_string(start + steps - 1) + " exceed the " +
                        (cache ? "cache capacity " : "model context ") + std::to_string(limit));
  const bool full = arch == nullptr || arch->empty();
  if (!full && router == nullptr) check_architecture(config_, *arch, "architecture");
  const Architecture& widths = full ? full_arch_ : *arch;

  auto [cos, sin] = rope(start, steps);
  auto h = embed(tokens, start);
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    LayerDecision decision;
    if (router != nullptr) {
      decision = router->route(l, h, cache == nullptr || start == 0);
    } else {
      decision.widths = widths[l];
    }
    torch::Tensor* ck = cache ? &cache->keys[l] : nullptr;
    torch::Tensor* cv = cache ? &cache->values[l] : nullptr;
    const int64_t kv = decision.widths.kv_groups;
    if (cache && !ck->defined()) {
      auto options = torch::TensorOptions().dtype(dtype()).device(device());
      *ck = torch::zeros({tokens.size(0), kv, cache->capacity, config_.head_dim()}, options);
      *cv = torch::zeros_like(*ck);
    }
    if (cache && ck->size(1) != kv)
      fail("forward", "KV cache was made for " + std::to_string(ck->size(1)) +
                          " KV groups at layer " + std::to_string(l) + ", architecture asks for " +
                          std::to_string(kv));
    h = layer(l).forward(h, start, decision, cos, sin, ck, cv);
  }
  if (cache) cache->length += steps;
  return head(h);
}

torch::Tensor TransformerImpl::decode_rows(const std::vector<int64_t>& tokens,
                                           const std::vector<KVCache*>& caches,
                                           const Architecture* arch) {
  const auto batch = static_cast<int64_t>(tokens.size());
  if (batch == 0 || caches.size() != tokens.size())
    fail("decode_rows", std::to_string(tokens.size()) + " tokens for " +
                            std::to_string(caches.size()) + " caches");
  const bool full = arch == nullptr || arch->empty();
  if (!full) check_architecture(config_, *arch, "architecture");
  const Architecture& widths = full ? full_arch_ : *arch;
  std::vector<int64_t> positions;
  for (const auto* cache : caches) {
    if (cache->length >= cache->capacity)
      fail("decode_rows",
           "a sequence's cache is full (" + std::to_string(cache->capacity) + " positions)");
    positions.push_back(cache->length);
  }
  auto at = torch::tensor(positions, torch::kLong).to(device());
  auto h = model->embed_tokens->forward(torch::tensor(tokens, torch::kLong).to(device()));
  torch::Tensor cos, sin;
  if (config_.gpt()) {
    h = h + model->embed_positions->weight.index_select(0, at);
  } else {
    ensure_rope(*std::max_element(positions.begin(), positions.end()) + 1);
    const int64_t half = config_.head_dim() / 2;
    cos = rope_cos_.index_select(0, at).to(dtype()).view({batch, 1, 1, half});
    sin = rope_sin_.index_select(0, at).to(dtype()).view({batch, 1, 1, half});
  }
  h = h.view({batch, 1, -1});
  std::vector<RowCache> rows(caches.size());
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    for (size_t b = 0; b < caches.size(); ++b) {
      auto& keys = caches[b]->keys[l];
      if (!keys.defined() || keys.size(0) != 1 || keys.size(1) != widths[l].kv_groups)
        fail("decode_rows", "sequence " + std::to_string(b) + "'s cache at layer " +
                                std::to_string(l) + " was not made for this architecture");
      rows[b] = RowCache{&keys, &caches[b]->values[l], positions[b]};
    }
    h = layer(l).forward_rows(h, widths[l], cos, sin, rows);
  }
  for (auto* cache : caches) cache->length += 1;
  return head(h).view({batch, -1});
}

torch::Tensor TransformerImpl::embed(const torch::Tensor& tokens, int64_t start) {
  auto h = model->embed_tokens->forward(tokens);
  if (!model->embed_positions) return h;
  // [T, hidden] rows broadcast over the batch.
  return h + model->embed_positions->weight.narrow(0, start, tokens.size(-1));
}

torch::Tensor TransformerImpl::head(const torch::Tensor& hidden) {
  auto h = model->norm->forward(hidden);
  return lm_head ? lm_head->forward(h) : torch::linear(h, model->embed_tokens->weight);
}

void TransformerImpl::ensure_rope(int64_t positions) {
  if (rope_cos_.defined() && rope_cos_.size(0) >= positions && rope_cos_.device() == device())
    return;
  // Grown by doubling up to the context: a long-context model (Llama 3's 131072 positions) does
  // not pay for tables it never reaches.
  const int64_t have = rope_cos_.defined() ? rope_cos_.size(0) : 0;
  const int64_t rows = std::min(config_.max_position_embeddings,
                                std::max({positions, 2 * have, static_cast<int64_t>(4096)}));
  // Plain tensors even when first reached under InferenceMode, so training can use them later.
  c10::InferenceMode normal_tensors(false);
  torch::NoGradGuard no_grad;
  if (have < rows) std::tie(rope_cos_, rope_sin_) = rope_tables(config_, rows, torch::kDouble);
  rope_cos_ = rope_cos_.to(device());
  rope_sin_ = rope_sin_.to(device());
}

std::pair<torch::Tensor, torch::Tensor> TransformerImpl::rope(int64_t start, int64_t steps) {
  if (config_.gpt()) return {};  // learned positions are added at the embedding
  // Tables are float64; cast once per call to the activation dtype.
  ensure_rope(start + steps);
  const auto act_dtype = dtype();
  return {rope_cos_.narrow(0, start, steps).to(act_dtype),
          rope_sin_.narrow(0, start, steps).to(act_dtype)};
}

DecoderLayerImpl& TransformerImpl::layer(int64_t l) {
  return *model->layers->ptr<DecoderLayerImpl>(l);
}

KVCache TransformerImpl::make_cache(int64_t batch, int64_t capacity, const Architecture* arch,
                                    bool lazy) const {
  if (capacity < 1 || capacity > config_.max_position_embeddings)
    fail("KV cache", "capacity " + std::to_string(capacity) + " outside [1, " +
                         std::to_string(config_.max_position_embeddings) + "]");
  KVCache cache;
  cache.capacity = capacity;
  auto options = torch::TensorOptions().dtype(dtype()).device(device());
  if (lazy) {
    cache.keys.resize(config_.num_hidden_layers);
    cache.values.resize(config_.num_hidden_layers);
    return cache;
  }
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    const int64_t kv = (arch && !arch->empty()) ? (*arch)[l].kv_groups : full_arch_[l].kv_groups;
    cache.keys.push_back(torch::zeros({batch, kv, capacity, config_.head_dim()}, options));
    cache.values.push_back(torch::zeros({batch, kv, capacity, config_.head_dim()}, options));
  }
  return cache;
}

void TransformerImpl::set_observer(ActivationObserver* observer) {
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    auto layer = model->layers->ptr<DecoderLayerImpl>(l);
    layer->self_attn->observer = observer;
    layer->mlp->observer = observer;
  }
}

io::TensorMap TransformerImpl::state() const {
  io::TensorMap out;
  for (const auto& item : named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
  return out;
}

void TransformerImpl::load_state(const io::TensorMap& tensors, const std::string& where) {
  torch::NoGradGuard no_grad;
  auto params = named_parameters(/*recurse=*/true);
  for (const auto& item : params) {
    auto it = tensors.find(item.key());
    if (it == tensors.end()) fail(where, "missing tensor '" + item.key() + "'");
    if (it->second.sizes() != item.value().sizes())
      fail(where, "tensor '" + item.key() + "' has shape " + shape_str(it->second.sizes()) +
                      " but config.json implies " + shape_str(item.value().sizes()));
    // Weights are real numbers: integer or boolean data (a relabelled dtype) would be converted
    // to floats silently.
    if (!it->second.is_floating_point())
      fail(where, "tensor '" + item.key() + "' is stored as " +
                      std::string(c10::toString(it->second.scalar_type())) +
                      "; weights must be floating point (F32, F16, BF16, F64)");
    item.value().copy_(it->second);
  }
  for (const auto& [name, tensor] : tensors) {
    if (params.find(name) != nullptr) continue;
    const bool rotary = name.size() > 8 && name.find("rotary_emb.inv_freq") != std::string::npos;
    const bool tied_head = name == "lm_head.weight" && config_.tie_word_embeddings;
    if (!rotary && !tied_head)
      fail(where, "unexpected tensor '" + name + "' (not part of a " +
                      std::string(config_.family == Family::Llama ? "Llama" : "GPT") +
                      " model with this config)");
  }
}

int64_t TransformerImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

torch::Device TransformerImpl::device() const {
  return model->embed_tokens->weight.device();
}
torch::Dtype TransformerImpl::dtype() const {
  return model->embed_tokens->weight.scalar_type();
}

}  // namespace flextron::model
