// Llama-family checkpoints as transformers writes them (Llama 3.x, Qwen2/2.5, Mistral,
// SmolLM, TinyLlama and plain Llama with attention_bias): a random checkpoint per layout is
// written the way the real files are (tied embeddings under either name, the safetensors alias
// map, bf16 / f16 / f32, sharded, extra buffers), loaded, and its logits compared with a forward
// written here from the definition (float64: 1e-10; float32: 1e-5). Then cached decoding, the
// fast runtime, ranking and extraction keep their identities on each layout, and the saved
// directory reloads as the same model.
#include <cmath>
#include <fstream>
#include <functional>
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "model/extract.h"
#include "runtime/fast_decoder.h"
#include "test_util.h"
#include "train/importance.h"

namespace {

namespace fs = std::filesystem;
namespace fm = flextron::model;
using flextron::io::TensorMap;
using nlohmann::json;

// How the embedding and the LM head are stored.
enum class Tied {
  Untied,     // both, different values (tie_word_embeddings false)
  EmbedOnly,  // tied, model.embed_tokens.weight only (what transformers writes)
  HeadAlias,  // tied, lm_head.weight only, __metadata__ {"model.embed_tokens.weight": ...}
  HeadOnly,   // tied, lm_head.weight only, no alias, tie_word_embeddings absent
  BothEqual,  // tied, both stored and equal
};

struct Variant {
  std::string name;
  json config;  // config.json exactly as the family writes it
  torch::Dtype stored = torch::kFloat;
  bool sharded = false;
  Tied tied = Tied::EmbedOnly;
  bool extra_buffers = false;  // rotary inv_freq buffers, as older transformers saved them
};

// gtest prints a parameter by its name, not its bytes.
void PrintTo(const Variant& v, std::ostream* os) {
  *os << v.name;
}

// The shape the reference needs, read back from the config (the test's own reading).
struct Shape {
  int64_t d, ff, layers, heads, kv, hd, vocab;
  bool qkv_bias, o_bias;
  double eps, theta;
  json scaling;
};

Shape shape_of(const json& c) {
  Shape s{};
  s.d = c["hidden_size"];
  s.ff = c["intermediate_size"];
  s.layers = c["num_hidden_layers"];
  s.heads = c["num_attention_heads"];
  s.kv = c["num_key_value_heads"];
  s.hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : s.d / s.heads;
  s.vocab = c["vocab_size"];
  s.qkv_bias = c["model_type"] == "qwen2" || c.value("attention_bias", false);
  s.o_bias = c["model_type"] != "qwen2" && c.value("attention_bias", false);
  s.eps = c["rms_norm_eps"];
  s.theta = c.value("rope_theta", 10000.0);
  s.scaling = c.value("rope_scaling", json());
  return s;
}

// Random weights in HF names, float64, scaled so that activations stay O(1).
TensorMap random_weights(const Shape& s, uint64_t seed) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(torch::kDouble);
  auto mat = [&](int64_t out, int64_t in) {
    return torch::randn({out, in}, o) / std::sqrt(static_cast<double>(in));
  };
  TensorMap t;
  t["model.embed_tokens.weight"] = torch::randn({s.vocab, s.d}, o) * 0.3;
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t[p + "input_layernorm.weight"] = torch::rand({s.d}, o) + 0.5;
    t[p + "post_attention_layernorm.weight"] = torch::rand({s.d}, o) + 0.5;
    t[p + "self_attn.q_proj.weight"] = mat(s.heads * s.hd, s.d);
    t[p + "self_attn.k_proj.weight"] = mat(s.kv * s.hd, s.d);
    t[p + "self_attn.v_proj.weight"] = mat(s.kv * s.hd, s.d);
    t[p + "self_attn.o_proj.weight"] = mat(s.d, s.heads * s.hd);
    if (s.qkv_bias) {
      t[p + "self_attn.q_proj.bias"] = torch::randn({s.heads * s.hd}, o) * 0.5;
      t[p + "self_attn.k_proj.bias"] = torch::randn({s.kv * s.hd}, o) * 0.5;
      t[p + "self_attn.v_proj.bias"] = torch::randn({s.kv * s.hd}, o) * 0.5;
    }
    if (s.o_bias) t[p + "self_attn.o_proj.bias"] = torch::randn({s.d}, o) * 0.5;
    t[p + "mlp.gate_proj.weight"] = mat(s.ff, s.d);
    t[p + "mlp.up_proj.weight"] = mat(s.ff, s.d);
    t[p + "mlp.down_proj.weight"] = mat(s.d, s.ff);
  }
  t["model.norm.weight"] = torch::rand({s.d}, o) + 0.5;
  t["lm_head.weight"] = mat(s.vocab, s.d);
  return t;
}

// The weights as the model computes with them: rounded to the stored dtype, the LM head tied
// or not.
TensorMap effective_weights(TensorMap t, const Variant& v) {
  for (auto& [name, tensor] : t) tensor = tensor.to(v.stored).to(torch::kDouble);
  if (v.tied != Tied::Untied) t["lm_head.weight"] = t.at("model.embed_tokens.weight");
  return t;
}

// inv_freq from the definition, in float64: theta^(-2i/hd), then HF's rope_scaling rule.
std::vector<double> inverse_frequencies(const Shape& s) {
  std::vector<double> f;
  for (int64_t i = 0; i < s.hd / 2; ++i)
    f.push_back(1.0 / std::pow(s.theta, static_cast<double>(2 * i) / static_cast<double>(s.hd)));
  if (s.scaling.is_null()) return f;
  const std::string type = s.scaling.value("rope_type", s.scaling.value("type", ""));
  const double factor = s.scaling["factor"];
  for (auto& x : f) {
    if (type == "linear") {
      x /= factor;
      continue;
    }
    const double low = s.scaling["low_freq_factor"], high = s.scaling["high_freq_factor"];
    const double context = s.scaling["original_max_position_embeddings"];
    const double wavelen = 2 * M_PI / x;
    if (wavelen < context / high) continue;  // high frequencies kept
    if (wavelen > context / low) {
      x /= factor;  // low frequencies interpolated
      continue;
    }
    const double smooth = (context / wavelen - low) / (high - low);
    x = (1 - smooth) * x / factor + smooth * x;
  }
  return f;
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x / torch::sqrt(x.pow(2).mean(-1, true) + eps) * w;
}

// Logits [T, vocab] of one sequence, head by head and position by position from the
// definition (no batching tricks, no cache).
torch::Tensor reference_logits(const TensorMap& w, const Shape& s,
                               const std::vector<int64_t>& tokens) {
  const auto T = static_cast<int64_t>(tokens.size());
  const auto inv_freq = inverse_frequencies(s);
  auto rotate = [&](torch::Tensor v, int64_t pos) {  // v: [hd], halves (i, i + hd/2) paired
    auto out = v.clone();
    for (int64_t i = 0; i < s.hd / 2; ++i) {
      const double a = static_cast<double>(pos) * inv_freq[static_cast<size_t>(i)];
      const double x1 = v[i].item<double>(), x2 = v[i + s.hd / 2].item<double>();
      out[i] = x1 * std::cos(a) - x2 * std::sin(a);
      out[i + s.hd / 2] = x2 * std::cos(a) + x1 * std::sin(a);
    }
    return out;
  };
  auto linear = [&](const torch::Tensor& x, const std::string& name) {
    auto y = torch::matmul(x, w.at(name + ".weight").t());
    auto bias = w.find(name + ".bias");
    return bias == w.end() ? y : y + bias->second;
  };
  auto h = w.at("model.embed_tokens.weight").index_select(0, torch::tensor(tokens));
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    auto x = rms_norm(h, w.at(p + "input_layernorm.weight"), s.eps);
    auto q = linear(x, p + "self_attn.q_proj"), k = linear(x, p + "self_attn.k_proj"),
         v = linear(x, p + "self_attn.v_proj");
    auto att = torch::zeros({T, s.heads * s.hd}, h.options());
    for (int64_t head = 0; head < s.heads; ++head) {
      const int64_t g = head / (s.heads / s.kv);  // its KV head
      for (int64_t t = 0; t < T; ++t) {
        auto qt = rotate(q[t].narrow(0, head * s.hd, s.hd), t);
        std::vector<torch::Tensor> keys, values;
        for (int64_t u = 0; u <= t; ++u) {
          keys.push_back(rotate(k[u].narrow(0, g * s.hd, s.hd), u));
          values.push_back(v[u].narrow(0, g * s.hd, s.hd));
        }
        auto scores = torch::matmul(torch::stack(keys), qt) / std::sqrt(double(s.hd));
        att[t].narrow(0, head * s.hd, s.hd) =
            torch::matmul(torch::softmax(scores, 0), torch::stack(values));
      }
    }
    h = h + linear(att, p + "self_attn.o_proj");
    x = rms_norm(h, w.at(p + "post_attention_layernorm.weight"), s.eps);
    auto gate = linear(x, p + "mlp.gate_proj");
    h = h + linear(gate * torch::sigmoid(gate) * linear(x, p + "mlp.up_proj"), p + "mlp.down_proj");
  }
  return torch::matmul(rms_norm(h, w.at("model.norm.weight"), s.eps), w.at("lm_head.weight").t());
}

// Writes `weights` (float64) as the variant's checkpoint directory.
void write_checkpoint(const fs::path& dir, const Variant& v, const TensorMap& weights) {
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << v.config.dump(2);
  TensorMap stored;
  for (const auto& [name, t] : weights) stored[name] = t.to(v.stored);
  flextron::io::Metadata meta{{"format", "pt"}};
  const char* embed = "model.embed_tokens.weight";
  switch (v.tied) {
    case Tied::Untied:
      break;
    case Tied::EmbedOnly:
      stored.erase("lm_head.weight");
      break;
    case Tied::HeadAlias:
    case Tied::HeadOnly:
      stored["lm_head.weight"] = stored.at(embed);
      stored.erase(embed);
      if (v.tied == Tied::HeadAlias) meta[embed] = "lm_head.weight";
      break;
    case Tied::BothEqual:
      stored["lm_head.weight"] = stored.at(embed).clone();
      break;
  }
  if (v.extra_buffers)
    for (int64_t l = 0; l < v.config["num_hidden_layers"].get<int64_t>(); ++l)
      stored["model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq"] =
          torch::ones({4});
  if (!v.sharded) {
    flextron::io::save_safetensors(dir / "model.safetensors", stored, meta);
    return;
  }
  // Two shards split by name order, as save_pretrained's max_shard_size would.
  TensorMap first, second;
  json weight_map = json::object();
  size_t i = 0;
  for (const auto& [name, t] : stored) {
    const bool one = i++ < stored.size() / 2;
    (one ? first : second)[name] = t;
    weight_map[name] =
        one ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  flextron::io::save_safetensors(dir / "model-00001-of-00002.safetensors", first, meta);
  flextron::io::save_safetensors(dir / "model-00002-of-00002.safetensors", second, meta);
  std::ofstream(dir / "model.safetensors.index.json")
      << json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump(2);
}

json llama_config(int64_t d, int64_t ff, int64_t layers, int64_t heads, int64_t kv) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", d},
          {"intermediate_size", ff},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv},
          {"vocab_size", 96},
          {"max_position_embeddings", 2048},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"hidden_act", "silu"},
          {"torch_dtype", "float32"},
          {"attention_dropout", 0.0},
          {"pretraining_tp", 1},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

std::vector<Variant> variants() {
  std::vector<Variant> out;
  {  // Llama 3.2: rope_theta 500000, llama3 rope_scaling, explicit head_dim (here != d / heads),
     // tied embeddings stored under lm_head with the alias map, bf16, sharded, eos list.
    auto c = llama_config(48, 80, 2, 4, 2);
    c["head_dim"] = 16;
    c["rope_theta"] = 500000.0;
    c["max_position_embeddings"] = 131072;
    c["rope_scaling"] = {{"factor", 32.0},
                         {"high_freq_factor", 4.0},
                         {"low_freq_factor", 1.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
    c["tie_word_embeddings"] = true;
    c["eos_token_id"] = {2, 5, 7};
    c["torch_dtype"] = "bfloat16";
    out.push_back({"llama3", c, torch::kBFloat16, true, Tied::HeadAlias, false});
  }
  {  // Qwen2.5: q/k/v biases, rope_theta 1e6, tied (stored twice, equal), no sliding window used.
    auto c = llama_config(64, 96, 2, 4, 2);
    c["architectures"] = {"Qwen2ForCausalLM"};
    c["model_type"] = "qwen2";
    c["rope_theta"] = 1000000.0;
    c["rms_norm_eps"] = 1e-6;
    c["tie_word_embeddings"] = true;
    c["use_sliding_window"] = false;
    c["sliding_window"] = 512;
    c["max_window_layers"] = 2;
    c["max_position_embeddings"] = 32768;
    out.push_back({"qwen2", c, torch::kFloat, false, Tied::BothEqual, false});
  }
  {  // Mistral: a sliding window as large as the context, untied head, f16, sharded.
    auto c = llama_config(64, 112, 2, 8, 2);
    c["architectures"] = {"MistralForCausalLM"};
    c["model_type"] = "mistral";
    c["sliding_window"] = 2048;
    c["head_dim"] = 8;
    c["tie_word_embeddings"] = false;
    out.push_back({"mistral", c, torch::kHalf, true, Tied::Untied, false});
  }
  {  // SmolLM2: plain Llama, tied, embedding only, bf16, old rotary buffers in the file.
    auto c = llama_config(64, 128, 3, 4, 4);
    c["tie_word_embeddings"] = true;
    out.push_back({"smollm", c, torch::kBFloat16, false, Tied::EmbedOnly, true});
  }
  {  // TinyLlama-like config without tie_word_embeddings, the head stored under lm_head only
     // (the checkpoint that failed to import before).
    auto c = llama_config(64, 96, 2, 8, 4);
    out.push_back({"tinyllama-tied-head", c, torch::kFloat, false, Tied::HeadOnly, false});
  }
  {  // Llama with attention_bias (q/k/v/o biases) and linear rope scaling.
    auto c = llama_config(48, 64, 2, 6, 3);
    c["attention_bias"] = true;
    c["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    c["tie_word_embeddings"] = false;
    out.push_back({"llama-attention-bias", c, torch::kFloat, false, Tied::Untied, false});
  }
  return out;
}

std::vector<int64_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  std::vector<int64_t> t;
  for (int64_t i = 0; i < n; ++i) t.push_back(pick(rng));
  return t;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::Tensor logits_of(fm::TransformerImpl& m, const std::vector<int64_t>& tokens,
                        const fm::Architecture* arch = nullptr) {
  torch::NoGradGuard no_grad;
  return m.forward(torch::tensor(tokens).unsqueeze(0), nullptr, arch)[0];
}

fm::Architecture random_architecture(const fm::ModelConfig& c, std::mt19937& rng) {
  fm::Architecture arch;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    arch.push_back({std::uniform_int_distribution<int64_t>(1, c.layer_mlp(l))(rng),
                    std::uniform_int_distribution<int64_t>(1, c.layer_kv_heads(l))(rng)});
  return arch;
}

class HfCheckpoint : public ::testing::TestWithParam<Variant> {};

// Loaded logits equal the definition's, in float64 to rounding and in float32 to 1e-5.
TEST_P(HfCheckpoint, LogitsEqualTheDefinition) {
  const auto& v = GetParam();
  const auto dir = flextron::testing::scratch_dir() / v.name;
  const auto shape = shape_of(v.config);
  const auto weights = random_weights(shape, 11);
  write_checkpoint(dir, v, weights);
  const auto tokens = random_tokens(12, shape.vocab, 3);
  const auto expected = reference_logits(effective_weights(weights, v), shape, tokens);

  flextron::io::LoadOptions f64;
  f64.dtype = torch::kDouble;
  auto loaded = flextron::io::load_model_dir(dir, f64);
  EXPECT_EQ(loaded.model->config().tie_word_embeddings, v.tied != Tied::Untied);
  EXPECT_LT(max_diff(logits_of(*loaded.model, tokens), expected), 1e-10);
  // Every note says what was resolved: the alias, the tie, the buffers ignored.
  std::string notes;
  for (const auto& n : loaded.notes) notes += n + "\n";
  if (v.tied == Tied::HeadAlias) {
    EXPECT_NE(notes.find("alias"), std::string::npos) << notes;
  }
  if (v.tied == Tied::HeadOnly) {
    EXPECT_NE(notes.find("tied"), std::string::npos) << notes;
  }
  if (v.tied == Tied::EmbedOnly || v.tied == Tied::Untied) {
    EXPECT_EQ(notes, "");
  }

  auto f32 = flextron::io::load_model_dir(dir);
  EXPECT_LT(max_diff(logits_of(*f32.model, tokens), expected), 1e-5);
}

// Cached decoding (a prefill, then token by token) equals the full forward, at full width and a
// random architecture; the fast runtime gives the same logits (float32, 1e-4).
TEST_P(HfCheckpoint, CachedDecodingAndTheFastRuntimeEqualTheForward) {
  const auto& v = GetParam();
  const auto dir = flextron::testing::scratch_dir() / v.name;
  const auto shape = shape_of(v.config);
  write_checkpoint(dir, v, random_weights(shape, 12));
  flextron::io::LoadOptions f64;
  f64.dtype = torch::kDouble;
  auto m = flextron::io::load_model_dir(dir, f64).model;
  const auto tokens = random_tokens(20, shape.vocab, 4);
  std::mt19937 rng(9);
  const auto reduced = random_architecture(m->config(), rng);
  torch::NoGradGuard no_grad;
  for (const fm::Architecture* arch : {static_cast<const fm::Architecture*>(nullptr), &reduced}) {
    auto full = logits_of(*m, tokens, arch);
    auto cache = m->make_cache(1, 32, arch);
    auto input = torch::tensor(tokens).unsqueeze(0);
    std::vector<torch::Tensor> parts{m->forward(input.narrow(1, 0, 6), &cache, arch)[0]};
    for (int64_t t = 6; t < 20; ++t)
      parts.push_back(m->forward(input.narrow(1, t, 1), &cache, arch)[0]);
    EXPECT_LT(max_diff(torch::cat(parts, 0), full), 1e-10) << (arch ? "reduced" : "full");
  }

  auto m32 = flextron::io::load_model_dir(dir).model;
  flextron::runtime::FastDecoder engine(*m32, flextron::runtime::EngineOptions{2, 16});
  for (const auto& arch : {fm::Architecture{}, reduced}) {
    auto expected = logits_of(*m32, tokens, &arch);
    auto cache = engine.make_cache(20, arch);
    std::vector<float> all(static_cast<size_t>(20 * shape.vocab));
    engine.prefill(tokens, cache, arch, all.data());
    auto got = torch::from_blob(all.data(), {20, shape.vocab}, torch::kFloat);
    EXPECT_LT(max_diff(got, expected), 1e-4) << (arch.empty() ? "full" : "reduced");
    auto stepped = engine.make_cache(20, arch);
    std::vector<int64_t> head(tokens.begin(), tokens.begin() + 5);
    const float* last = engine.prefill(head, stepped, arch);
    EXPECT_LT(max_diff(torch::from_blob(const_cast<float*>(last), {shape.vocab}, torch::kFloat),
                       expected[4]),
              1e-4);
    for (int64_t t = 5; t < 20; ++t) {
      const float* step = engine.decode(tokens[static_cast<size_t>(t)], stepped, arch);
      EXPECT_LT(max_diff(torch::from_blob(const_cast<float*>(step), {shape.vocab}, torch::kFloat),
                         expected[t]),
                1e-4)
          << "decode step " << t;
    }
  }
}

// Ranking keeps the function (q/k/v biases move with their rows); an extracted sub-network
// equals the elastic model at its architecture; both save and reload as the same model, with
// the family's config (model_type, biases, rope_scaling) kept.
TEST_P(HfCheckpoint, RankExtractAndSaveKeepTheFunction) {
  const auto& v = GetParam();
  const auto root = flextron::testing::scratch_dir();
  const auto shape = shape_of(v.config);
  write_checkpoint(root / "hf", v, random_weights(shape, 13));
  flextron::io::LoadOptions f64;
  f64.dtype = torch::kDouble;
  auto m = flextron::io::load_model_dir(root / "hf", f64).model;
  const auto tokens = random_tokens(16, shape.vocab, 5);
  const auto before = logits_of(*m, tokens);

  torch::manual_seed(2);
  auto windows = torch::randint(0, shape.vocab, {4, 16}, torch::kLong);
  auto ranked = flextron::train::rank_by_importance(*m, windows);
  EXPECT_LT(max_diff(logits_of(*m, tokens), before), 1e-10);
  // The order is not the identity in every layer (so the check above moved something).
  bool moved = false;
  for (const auto& layer : ranked.order.mlp)
    for (size_t i = 0; i < layer.size(); ++i) moved |= layer[i] != static_cast<int64_t>(i);
  EXPECT_TRUE(moved);

  std::mt19937 rng(21);
  const auto arch = random_architecture(m->config(), rng);
  auto dense = fm::extract_subnetwork(*m, arch);
  const auto elastic = logits_of(*m, tokens, &arch);
  EXPECT_LT(max_diff(logits_of(*dense, tokens), elastic), 1e-10);
  EXPECT_EQ(dense->config().qkv_bias, m->config().qkv_bias);

  flextron::io::save_model_dir(root / "ranked", *m, nullptr);
  flextron::io::save_model_dir(root / "dense", *dense, nullptr);
  const auto saved = flextron::io::read_json_file(root / "ranked" / "config.json");
  EXPECT_EQ(saved["model_type"], v.config["model_type"]);
  if (v.config.contains("rope_scaling")) {
    EXPECT_EQ(saved["rope_scaling"]["factor"], v.config["rope_scaling"]["factor"]);
  }
  auto reloaded = flextron::io::load_model_dir(root / "ranked", f64);
  EXPECT_LT(max_diff(logits_of(*reloaded.model, tokens), before), 1e-10);
  EXPECT_TRUE(reloaded.notes.empty());
  auto dense_back = flextron::io::load_model_dir(root / "dense", f64);
  EXPECT_LT(max_diff(logits_of(*dense_back.model, tokens), elastic), 1e-10);
}

// GGUF export and import keep each layout: q/k/v/o biases as llama.cpp's optional attn_*.bias
// (q/k permuted with their rows), linear scaling as rope.scaling keys, llama3 scaling as the
// rope_freqs.weight divisors llama.cpp's converter writes (and recovered from them on import).
TEST_P(HfCheckpoint, GgufRoundTripKeepsTheFunction) {
  const auto& v = GetParam();
  const auto root = flextron::testing::scratch_dir();
  const auto shape = shape_of(v.config);
  write_checkpoint(root / "hf", v, random_weights(shape, 16));
  auto m = flextron::io::load_model_dir(root / "hf").model;
  flextron::io::save_gguf_model(root / "m.gguf", *m, nullptr, torch::kFloat);
  flextron::io::import_gguf_model(root / "m.gguf", root / "back");
  auto back = flextron::io::load_model_dir(root / "back").model;
  const auto tokens = random_tokens(16, shape.vocab, 6);
  EXPECT_LT(max_diff(logits_of(*back, tokens), logits_of(*m, tokens)), 1e-5);
  const auto& a = m->config().rope_scaling;
  const auto& b = back->config().rope_scaling;
  EXPECT_EQ(static_cast<int>(a.kind), static_cast<int>(b.kind));
  EXPECT_NEAR(a.factor, b.factor, 1e-6);
  EXPECT_EQ(back->config().qkv_bias, m->config().qkv_bias);
  EXPECT_EQ(back->config().o_bias, m->config().o_bias);
}

INSTANTIATE_TEST_SUITE_P(Layouts, HfCheckpoint, ::testing::ValuesIn(variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           std::string name;
                           for (char ch : info.param.name) name += std::isalnum(ch) ? ch : '_';
                           return name;
                         });

// A Qwen2 GGUF as llama.cpp's converter writes it: architecture "qwen2" (keys qwen2.*), q/k rows
// in HF's order (its qwen2 graph rotates halves, so nothing is permuted), q/k/v biases. Made here
// from our llama-architecture export by renaming the keys and putting the HF rows back.
TEST(HfCheckpointGguf, Qwen2ArchitectureImportsWithoutRotaryPermutation) {
  const auto root = flextron::testing::scratch_dir();
  const auto v = variants()[1];
  ASSERT_EQ(v.name, "qwen2");
  write_checkpoint(root / "hf", v, random_weights(shape_of(v.config), 17));
  auto m = flextron::io::load_model_dir(root / "hf").model;
  flextron::io::save_gguf_model(root / "llama.gguf", *m, nullptr, torch::kFloat);
  auto file = flextron::io::read_gguf(root / "llama.gguf");
  flextron::io::GgufFile qwen;
  for (const auto& [key, value] : file.metadata)
    qwen.metadata[key.rfind("llama.", 0) == 0 ? "qwen2." + key.substr(6) : key] = value;
  qwen.metadata["general.architecture"] = flextron::io::gguf_string("qwen2");
  const auto state = m->state();
  for (auto t : file.tensors) {
    const auto dot = t.name.find('.', 4);
    const std::string layer = t.name.substr(4, dot - 4), rest = t.name.substr(dot + 1);
    const std::string ours = "model.layers." + layer + ".self_attn.";
    if (rest == "attn_q.weight") t.data = state.at(ours + "q_proj.weight");
    if (rest == "attn_k.weight") t.data = state.at(ours + "k_proj.weight");
    if (rest == "attn_q.bias") t.data = state.at(ours + "q_proj.bias");
    if (rest == "attn_k.bias") t.data = state.at(ours + "k_proj.bias");
    t.type.reset();
    qwen.tensors.push_back(t);
  }
  flextron::io::write_gguf(root / "qwen2.gguf", qwen);
  flextron::io::import_gguf_model(root / "qwen2.gguf", root / "back");
  auto back = flextron::io::load_model_dir(root / "back").model;
  const auto tokens = random_tokens(16, shape_of(v.config).vocab, 8);
  EXPECT_LT(max_diff(logits_of(*back, tokens), logits_of(*m, tokens)), 1e-5);
  EXPECT_EQ(flextron::io::read_json_file(root / "back" / "config.json")["model_type"], "qwen2");
}

// `flextron import --from hf` of the checkpoint that failed before (tied embeddings stored under
// lm_head.weight with the alias map): imports, says what it resolved, and the result loads.
TEST(HfCheckpointCli, ImportsTiedAliasAndSaysSo) {
  const auto root = flextron::testing::scratch_dir();
  const auto v = variants().front();
  write_checkpoint(root / "hf", v, random_weights(shape_of(v.config), 14));
  const auto r = flextron::testing::run_cli("import --from hf --model '" + (root / "hf").string() +
                                            "' --out '" + (root / "out").string() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("note: 'model.embed_tokens.weight' is stored as its alias"),
            std::string::npos)
      << r.err;
  auto loaded = flextron::io::load_model_dir(root / "out");
  EXPECT_EQ(loaded.model->config().rope_scaling.kind, fm::RopeScaling::Kind::Llama3);
  EXPECT_TRUE(loaded.model->config().tie_word_embeddings);
}

// Layouts and fields that cannot be computed faithfully are refused by name.
TEST(HfCheckpointErrors, RefusedConfigsAndBrokenCheckpointsNameTheProblem) {
  const auto root = flextron::testing::scratch_dir();
  auto expect_error = [&](const std::string& label, const Variant& v, const TensorMap& w,
                          const std::string& message,
                          const std::function<void(const fs::path&)>& damage = nullptr) {
    const auto dir = root / label;
    write_checkpoint(dir, v, w);
    if (damage) damage(dir);
    try {
      flextron::io::load_model_dir(dir);
      ADD_FAILURE() << label << ": loaded";
    } catch (const flextron::Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos)
          << label << ": " << e.what();
    }
  };
  const auto base = variants()[3];  // smollm: tied, embedding only
  const auto w = random_weights(shape_of(base.config), 15);
  auto with = [&](const std::function<void(json&)>& edit) {
    Variant v = base;
    edit(v.config);
    return v;
  };
  expect_error("window", with([](json& c) {
                 c["model_type"] = "mistral";
                 c["sliding_window"] = 1024;
               }),
               w, "sliding_window 1024 is smaller than max_position_embeddings 2048");
  expect_error("yarn", with([](json& c) {
                 c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
               }),
               w, "rope_scaling type \"yarn\" is not supported");
  expect_error("llama3-incomplete", with([](json& c) {
                 c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
               }),
               w, "llama3 scaling needs \"low_freq_factor\"");
  expect_error("act", with([](json& c) { c["hidden_act"] = "gelu"; }), w,
               "hidden_act \"gelu\" is not supported");
  expect_error("mlp-bias", with([](json& c) { c["mlp_bias"] = true; }), w,
               "mlp_bias = true is not supported");
  expect_error("qwen3", with([](json& c) { c["model_type"] = "qwen3"; }), w,
               "unsupported model_type \"qwen3\"");
  Variant unequal = base;
  unequal.tied = Tied::Untied;                   // two different matrices stored...
  unequal.config["tie_word_embeddings"] = true;  // ...while the config says tied
  expect_error("unequal", unequal, w, "lm_head.weight differs from model.embed_tokens.weight");
  Variant untied = base;
  untied.config["tie_word_embeddings"] = false;  // says untied, stores no head
  expect_error("no-head", untied, w, "missing tensor 'lm_head.weight'");
  auto missing = w;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  expect_error("missing", base, missing, "missing tensor 'model.layers.1.mlp.up_proj.weight'");
  Variant sharded = base;
  sharded.sharded = true;
  expect_error("index", sharded, w, "missing tensor 'model.layers.9.mlp.up_proj.weight'",
               [](const fs::path& dir) {
                 auto index = flextron::io::read_json_file(dir / "model.safetensors.index.json");
                 index["weight_map"]["model.layers.9.mlp.up_proj.weight"] =
                     "model-00001-of-00002.safetensors";
                 std::ofstream(dir / "model.safetensors.index.json") << index.dump();
               });
}

}  // namespace
