#include "runtime/sequence.h"

#include <algorithm>
#include <limits>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::runtime {

std::vector<int64_t> encode_prompt(const text::Tokenizer& tokenizer,
                                   const model::ModelConfig& config, const std::string& prompt) {
  auto tokens = tokenizer.encode(prompt, /*add_bos=*/true);
  check_prompt_fits(config, static_cast<int64_t>(tokens.size()), "prompt");
  return tokens;
}

void check_prompt_fits(const model::ModelConfig& config, int64_t tokens, const std::string& where) {
  if (tokens >= config.max_position_embeddings)
    fail(where, std::to_string(tokens) + " tokens do not fit the model's context of " +
                    std::to_string(config.max_position_embeddings) +
                    " positions (one must be left for the reply)");
}

std::string describe_stop_reason(const std::string& reason, int64_t max_tokens, int64_t context) {
  if (reason == "length")
    return "stopped: reached the maximum of " + std::to_string(max_tokens) + " new tokens";
  if (reason == "eos") return "stopped: the model ended the text (end-of-sequence token)";
  if (reason == "context")
    return "stopped: reached the model's context length (" + std::to_string(context) +
           " positions)";
  if (reason == "stop") return "stopped: generated a stop string";
  return "stopped: " + reason;  // "cancelled", or what finish() was given
}

RoutedPrefill routed_prefill(FastDecoder& engine, model::TransformerImpl& model,
                             model::LayerRouter& router, const std::vector<int64_t>& tokens,
                             int64_t capacity) {
  c10::InferenceMode inference;
  auto cache = model.make_cache(1, capacity, nullptr, /*lazy=*/true);
  auto input = torch::tensor(tokens, torch::kLong).to(model.device()).unsqueeze(0);
  auto logits = model.forward(input, &cache, nullptr, &router);
  RoutedPrefill out;
  out.cache = engine.cache_from(cache, capacity);
  out.arch = model::full_architecture(engine.config());
  for (size_t l = 0; l < out.arch.size(); ++l)
    out.arch[l].kv_groups = out.cache.kv_groups(static_cast<int64_t>(l));
  out.last_logits = logits[0][static_cast<int64_t>(tokens.size()) - 1];
  return out;
}

Sequence::Sequence(model::TransformerImpl* model, FastDecoder* engine,
                   const text::Tokenizer& tokenizer, std::vector<int64_t> prompt_tokens,
                   int64_t max_tokens, const SamplingOptions& sampling,
                   const model::Architecture& arch, model::LayerRouter* router)
    : model_(model),
      engine_(engine),
      tokenizer_(tokenizer),
      prompt_(std::move(prompt_tokens)),
      max_tokens_(max_tokens),
      arch_(arch),
      router_(router),
      sampling_(sampling),
      sampler_(sampling) {
  if (max_tokens_ < 0) fail("--max-tokens", "must be >= 0");
  if (prompt_.empty()) fail("prompt", "no tokens (not even BOS)");
  const auto& config = engine != nullptr ? engine->config() : model->config();
  if (!arch_.empty()) model::check_architecture(config, arch_, "architecture");
}

Sequence::Sequence(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                   std::vector<int64_t> prompt_tokens, int64_t max_tokens,
                   const SamplingOptions& sampling, const model::Architecture& arch,
                   model::LayerRouter* router)
    : Sequence(&model, nullptr, tokenizer, std::move(prompt_tokens), max_tokens, sampling, arch,
               router) {
  // A router picks attention widths at prefill, so its cache is allocated then.
  cache_ = model.make_cache(1, capacity(model.config()), arch_.empty() ? nullptr : &arch_,
                            /*lazy=*/router != nullptr);
}

Sequence::Sequence(FastDecoder& engine, const text::Tokenizer& tokenizer,
                   std::vector<int64_t> prompt_tokens, int64_t max_tokens,
                   const SamplingOptions& sampling, const model::Architecture& arch,
                   model::LayerRouter* router, model::TransformerImpl* model)
    : Sequence(model, &engine, tokenizer, std::move(prompt_tokens), max_tokens, sampling, arch,
               router) {
  if (router == nullptr) {
    engine_cache_ = engine.make_cache(capacity(engine.config()), arch_);
    return;
  }
  if (model == nullptr) fail("fast runtime", "a routed sequence needs the model for its prefill");
  if (!router->routes_on_host())
    fail("fast runtime", "this router cannot route on the fast runtime");
}

int64_t Sequence::capacity(const model::ModelConfig& config) const {
  // Compared before adding: max_tokens may be as large as int64 allows.
  const auto prompt = static_cast<int64_t>(prompt_.size());
  return max_tokens_ >= config.max_position_embeddings - prompt ? config.max_position_embeddings
                                                                : prompt + max_tokens_;
}

void Sequence::prefill() {
  prev_ = prompt_.back();
  // The prompt's last logits are kept on the host: the first token's draw, and fork()'s.
  auto keep = [this](const torch::Tensor& logits) {
    auto host = logits.detach().to(torch::kCPU, torch::kFloat).contiguous().reshape({-1});
    prefill_logits_.assign(host.data_ptr<float>(), host.data_ptr<float>() + host.numel());
  };
  if (engine_ != nullptr && router_ != nullptr) {
    auto routed = routed_prefill(*engine_, *model_, *router_, prompt_, capacity(engine_->config()));
    engine_cache_ = std::move(routed.cache);
    arch_ = std::move(routed.arch);
    keep(routed.last_logits);
  } else if (engine_ != nullptr) {
    const float* logits = engine_->prefill(prompt_, engine_cache_, arch_);
    prefill_logits_.assign(logits, logits + engine_->config().vocab_size);
  } else {
    c10::InferenceMode inference;
    auto input = torch::tensor(prompt_, torch::kLong).to(model_->device()).unsqueeze(0);
    auto logits = model_->forward(input, &cache_, arch_.empty() ? nullptr : &arch_, router_);
    keep(logits[0][static_cast<int64_t>(prompt_.size()) - 1]);
  }
  if (constraint_) first_constraint_ = constraint_->clone();
  pick(prefill_logits_.data(), static_cast<int64_t>(prefill_logits_.size()));
}

std::unique_ptr<Sequence> Sequence::fork(uint64_t seed) const {
  const int64_t stored = engine_ != nullptr ? engine_cache_.length() : cache_.length;
  if (prefill_logits_.empty() || stored != static_cast<int64_t>(prompt_.size()))
    fail("sequence", "fork() needs a sequence just after its prefill");
  std::unique_ptr<Sequence> copy(new Sequence(*this));
  for (auto* tensors : {&copy->cache_.keys, &copy->cache_.values})
    for (auto& t : *tensors)
      if (t.defined()) t = t.clone();
  copy->tokens_.clear();
  copy->decoded_ = 0;
  copy->text_.clear();
  copy->logprobs_.clear();
  copy->stop_reason_.clear();
  copy->prev_ = prompt_.back();
  copy->sampling_.seed = seed;
  copy->sampler_ = Sampler(copy->sampling_);
  if (first_constraint_) copy->constraint_ = first_constraint_->clone();
  if (copy->drafting_) {  // the draft has seen nothing yet (it catches up in the first round)
    copy->drafting_->cache.reset();
    copy->drafting_->stats = {};
  }
  copy->pick(prefill_logits_.data(), static_cast<int64_t>(prefill_logits_.size()));
  return copy;
}

bool Sequence::is_end(int64_t id) const {
  if (id == tokenizer_.eos_id()) return true;
  for (int64_t e : tokenizer_.eos_ids())
    if (id == e) return true;
  return std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end();
}

bool Sequence::mask(const float* logits, int64_t vocab) {
  if (!constraint_) return false;
  // Text tokens this sequence may still write, this one included (the cache ends it at
  // capacity - prompt + 1, max_tokens before that).
  const int64_t cache_capacity = engine_ != nullptr ? engine_cache_.capacity() : cache_.capacity;
  const int64_t limit =
      std::min<int64_t>(max_tokens_, cache_capacity - static_cast<int64_t>(prompt_.size()) + 1);
  const int64_t left = limit - static_cast<int64_t>(tokens_.size());
  allowed_.resize(static_cast<size_t>(vocab));
  // Room for the end token after the value when there is any; else the value's last token.
  bool may_end = constraint_->allowed(left - 2, allowed_);
  if (!may_end && std::find(allowed_.begin(), allowed_.end(), 1) == allowed_.end())
    may_end = constraint_->allowed(left - 1, allowed_);
  masked_.assign(logits, logits + vocab);
  constexpr float kNever = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int64_t id = 0; id < vocab; ++id) {
    const bool ok = is_end(id) ? may_end : allowed_[static_cast<size_t>(id)] != 0;
    if (!ok) masked_[static_cast<size_t>(id)] = kNever;
    any = any || ok;
  }
  if (!any) fail("structured output", "no token can continue the JSON output");
  return true;
}

void Sequence::pick(const float* logits, int64_t vocab) {
  next_ =
      mask(logits, vocab) ? sampler_.sample(masked_.data(), vocab) : sampler_.sample(logits, vocab);
  settle(logits, vocab);
}

void Sequence::settle(const float* logits, int64_t vocab) {
  if (logprobs_top_ >= 0) pending_ = token_logprobs(logits, vocab, next_, logprobs_top_);
  take_sampled();
}

void Sequence::accept(const torch::Tensor& logits) {
  auto host = logits.detach().to(torch::kCPU, torch::kFloat).contiguous().reshape({-1});
  pick(host.data_ptr<float>(), host.numel());
}

void Sequence::accept(const float* logits) {
  const int64_t vocab =
      engine_ != nullptr ? engine_->config().vocab_size : model_->config().vocab_size;
  pick(logits, vocab);
}

void Sequence::decode_step() {
  if (drafting_) return speculative_step();
  ++decoded_;
  if (engine_ != nullptr) return accept(engine_->decode(next_, engine_cache_, arch_, router_));
  c10::InferenceMode inference;
  auto input = torch::full({1, 1}, next_,
                           torch::TensorOptions().dtype(torch::kLong).device(model_->device()));
  accept(model_->forward(input, &cache_, arch_.empty() ? nullptr : &arch_, router_)[0][0]);
}

void Sequence::take_sampled() {
  if (static_cast<int64_t>(tokens_.size()) >= max_tokens_) return finish("length");
  // BOS also ends a sequence: llama2.c's stories models delimit stories with it.
  if (next_ == tokenizer_.eos_id() || next_ == tokenizer_.bos_id()) return finish("eos");
  // Any end-of-turn id the model's generation_config.json lists (Llama 3: three of them).
  for (int64_t id : tokenizer_.eos_ids())
    if (next_ == id) return finish("eos");
  for (int64_t id : stop_ids_)
    if (next_ == id) return finish("eos");
  tokens_.push_back(next_);
  if (constraint_) constraint_->accept(next_);
  const std::string piece = tokenizer_.decode_piece(prev_, next_);
  text_ += piece;
  if (logprobs_top_ >= 0) {
    TokenLogprob entry{{next_, piece, pending_.chosen.logprob}, {}};
    for (const auto& alt : pending_.top)
      entry.top.push_back({alt.id, tokenizer_.decode_piece(prev_, alt.id), alt.logprob});
    logprobs_.push_back(std::move(entry));
  }
  prev_ = next_;
  if (static_cast<int64_t>(tokens_.size()) == max_tokens_) return finish("length");
  const int64_t stored = stored_override_ >= 0 ? stored_override_
                         : engine_ != nullptr  ? engine_cache_.length()
                                               : cache_.length;
  const bool full = stored >= (engine_ != nullptr ? engine_cache_.capacity() : cache_.capacity);
  if (full) return finish("context");
}

std::string Sequence::stop_description() const {
  if (stop_reason_.empty()) return "";
  const auto& config = engine_ != nullptr ? engine_->config() : model_->config();
  return describe_stop_reason(stop_reason_, max_tokens_, config.max_position_embeddings);
}

void Sequence::finish(const std::string& reason) {
  if (stop_reason_.empty()) stop_reason_ = reason;
}

std::string Sequence::take_text() {
  std::string out;
  out.swap(text_);
  return out;
}

std::vector<TokenLogprob> Sequence::take_logprobs() {
  std::vector<TokenLogprob> out;
  out.swap(logprobs_);
  return out;
}

}  // namespace flextron::runtime
