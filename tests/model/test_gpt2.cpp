// The GPT-2 family: a HuggingFace GPT-2 directory loads and computes GPT-2 (against a reference
// forward written from the definition), exports back losslessly, and every elastic identity the
// Llama family has holds for it: cached decoding = full forward, batched rows = separate steps,
// ranking keeps the function, extraction = the elastic model at that architecture.
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "gpt2_fixtures.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "model/extract.h"
#include "model/permutation.h"
#include "test_util.h"
#include "train/importance.h"

namespace {

namespace fm = flextron::model;
namespace ft = flextron::testing;
using flextron::io::LoadOptions;
using fm::Architecture;

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A random HF GPT-2 directory loaded in float64.
struct Gpt2Fixture {
  ft::Gpt2Shape shape;
  flextron::io::TensorMap hf;
  std::filesystem::path dir;
  fm::Transformer model{nullptr};
};

Gpt2Fixture make_fixture(const std::filesystem::path& dir, bool tied = true, uint64_t seed = 1,
                         bool model_prefix = true) {
  Gpt2Fixture f;
  f.shape.tied = tied;
  f.hf = ft::random_gpt2_tensors(f.shape, seed, model_prefix);
  f.dir = dir;
  ft::write_gpt2_dir(dir, f.shape, f.hf);
  LoadOptions options;
  options.dtype = torch::kDouble;
  options.with_tokenizer = false;
  f.model = flextron::io::load_model_dir(dir, options).model;
  return f;
}

torch::Tensor random_tokens(const ft::Gpt2Shape& s, int64_t batch, int64_t steps, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(s.vocab, {batch, steps}, torch::kLong);
}

Architecture random_architecture(const fm::ModelConfig& config, uint64_t seed) {
  const auto space = fm::default_elastic_space(config);
  std::mt19937_64 rng(seed);
  Architecture arch;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    arch.push_back({space.mlp[l][rng() % space.mlp[l].size()],
                    space.kv_groups[l][rng() % space.kv_groups[l].size()]});
  return arch;
}

TEST(Gpt2Model, HuggingFaceDirectoryComputesGpt2) {
  const auto root = ft::scratch_dir();
  for (bool tied : {true, false}) {
    auto f = make_fixture(root / (tied ? "tied" : "untied"), tied);
    const auto& c = f.model->config();
    EXPECT_TRUE(c.gpt());
    EXPECT_EQ(c.num_key_value_heads, c.num_attention_heads);  // elastic attention is per head
    EXPECT_EQ(c.tie_word_embeddings, tied);
    torch::NoGradGuard no_grad;
    auto tokens = random_tokens(f.shape, 1, 40, 2);
    auto ours = f.model->forward(tokens)[0];
    auto reference = ft::gpt2_reference_logits(f.hf, f.shape, tokens[0]);
    EXPECT_LT(max_diff(ours, reference), 1e-10) << (tied ? "tied" : "untied");
    EXPECT_GT(reference.abs().max().item<double>(), 1.0);  // not trivially small
  }
}

// GPT2Model's own files: no "transformer." prefix and the old causal-mask buffers.
TEST(Gpt2Model, LoadsGpt2ModelNamesWithMaskBuffers) {
  auto f = make_fixture(ft::scratch_dir(), true, 3, /*model_prefix=*/false);
  torch::NoGradGuard no_grad;
  auto tokens = random_tokens(f.shape, 1, 24, 4);
  EXPECT_LT(
      max_diff(f.model->forward(tokens)[0], ft::gpt2_reference_logits(f.hf, f.shape, tokens[0])),
      1e-10);
}

TEST(Gpt2Model, HfExportImportIsLossless) {
  const auto root = ft::scratch_dir();
  auto f = make_fixture(root / "hf", false, 5);
  flextron::io::save_model_dir(root / "out", *f.model, nullptr);
  // The written directory is HF GPT-2: its config fields and exactly the original tensors.
  const auto config = flextron::io::read_json_file(root / "out/config.json");
  EXPECT_EQ(config["model_type"], "gpt2");
  EXPECT_EQ(config["n_embd"], f.shape.hidden);
  EXPECT_EQ(config["n_inner"], f.shape.inner);
  EXPECT_EQ(config["architectures"][0], "GPT2LMHeadModel");
  const auto written = flextron::io::load_model_tensors(root / "out");
  ASSERT_EQ(written.size(), f.hf.size());
  for (const auto& [name, tensor] : f.hf) {
    ASSERT_TRUE(written.count(name)) << name;
    EXPECT_TRUE(torch::equal(written.at(name), tensor)) << name;
  }
  LoadOptions options;
  options.dtype = torch::kDouble;
  auto again = flextron::io::load_model_dir(root / "out", options).model;
  for (const auto& [name, tensor] : f.model->state())
    EXPECT_TRUE(torch::equal(again->state().at(name), tensor)) << name;
}

TEST(Gpt2Model, BadHuggingFaceFilesAreNamed) {
  const auto root = ft::scratch_dir();
  ft::Gpt2Shape s;
  auto expect_error = [&](const flextron::io::TensorMap& tensors, nlohmann::json config,
                          const std::string& needle) {
    const auto dir = root / std::to_string(std::hash<std::string>()(needle));
    ft::write_gpt2_dir(dir, s, tensors);
    flextron::io::write_text_atomically(dir / "config.json", config.dump());
    try {
      flextron::io::load_model_dir(dir);
      ADD_FAILURE() << "accepted, expected: " << needle;
    } catch (const flextron::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto good = ft::random_gpt2_tensors(s, 1);
  const auto config = ft::gpt2_hf_config(s);
  auto missing = good;
  missing.erase("transformer.h.1.mlp.c_fc.bias");
  expect_error(missing, config, "missing tensor 'transformer.h.1.mlp.c_fc.bias'");
  auto narrow = good;
  narrow["transformer.h.2.attn.c_attn.weight"] = torch::zeros({s.hidden, 2 * s.hidden});
  expect_error(narrow, config, "'transformer.h.2.attn.c_attn.weight' must be [48, 144]");
  auto extra = good;
  extra["transformer.h.0.attn.rotary"] = torch::zeros({2});
  expect_error(extra, config, "unexpected tensor 'transformer.h.0.attn.rotary'");
  auto act = config;
  act["activation_function"] = "relu";
  expect_error(good, act, "activation_function \"relu\" is not supported");
  auto scaled = config;
  scaled["scale_attn_by_inverse_layer_idx"] = true;
  expect_error(good, scaled, "scale_attn_by_inverse_layer_idx");
}

// The exact-erf GELU ("gelu") is its own activation, not the tanh form.
TEST(Gpt2Model, ExactGeluDiffersFromTheTanhForm) {
  const auto root = ft::scratch_dir();
  auto f = make_fixture(root / "tanh");
  auto config = ft::gpt2_hf_config(f.shape);
  config["activation_function"] = "gelu";
  flextron::io::write_text_atomically(f.dir / "config.json", config.dump());
  LoadOptions options;
  options.dtype = torch::kDouble;
  options.with_tokenizer = false;
  auto exact = flextron::io::load_model_dir(f.dir, options).model;
  EXPECT_FALSE(exact->config().gelu_tanh);
  torch::NoGradGuard no_grad;
  auto tokens = random_tokens(f.shape, 1, 16, 9);
  const double d = max_diff(exact->forward(tokens), f.model->forward(tokens));
  EXPECT_GT(d, 1e-6);
  EXPECT_LT(d, 0.5);
}

TEST(Gpt2Model, CachedDecodingEqualsFullForwardAtAnyArchitecture) {
  auto f = make_fixture(ft::scratch_dir());
  auto& m = *f.model;
  auto tokens = random_tokens(f.shape, 2, 30, 7);
  torch::NoGradGuard no_grad;
  for (uint64_t seed : {0, 1, 2}) {
    const Architecture arch = seed == 0 ? Architecture{} : random_architecture(m.config(), seed);
    auto full = m.forward(tokens, nullptr, &arch);
    auto cache = m.make_cache(2, 30, &arch);
    std::vector<torch::Tensor> parts{m.forward(tokens.narrow(1, 0, 9), &cache, &arch)};
    for (int64_t t = 9; t < 30; ++t)
      parts.push_back(m.forward(tokens.narrow(1, t, 1), &cache, &arch));
    EXPECT_LT(max_diff(torch::cat(parts, 1), full), 1e-10) << seed;
  }
}

// The server's batched step: rows at different positions equal separate cached steps.
TEST(Gpt2Model, BatchedRowsEqualSeparateSteps) {
  auto f = make_fixture(ft::scratch_dir());
  auto& m = *f.model;
  const auto arch = random_architecture(m.config(), 4);
  auto a = random_tokens(f.shape, 1, 12, 1), b = random_tokens(f.shape, 1, 5, 2);
  torch::NoGradGuard no_grad;
  auto ca = m.make_cache(1, 20, &arch), cb = m.make_cache(1, 20, &arch);
  m.forward(a, &ca, &arch);
  m.forward(b, &cb, &arch);
  auto ca2 = ca, cb2 = cb;
  for (auto* c : {&ca2, &cb2})
    for (auto* list : {&c->keys, &c->values})
      for (auto& t : *list) t = t.clone();
  auto rows = m.decode_rows({3, 8}, {&ca, &cb}, &arch);
  auto sa = m.forward(torch::full({1, 1}, 3, torch::kLong), &ca2, &arch)[0][0];
  auto sb = m.forward(torch::full({1, 1}, 8, torch::kLong), &cb2, &arch)[0][0];
  EXPECT_LT(max_diff(rows[0], sa), 1e-10);
  EXPECT_LT(max_diff(rows[1], sb), 1e-10);
  EXPECT_EQ(ca.length, 13);
  EXPECT_EQ(cb.length, 6);
}

TEST(Gpt2Model, RankingKeepsTheFunctionAndReordersHeadsAndNeurons) {
  auto f = make_fixture(ft::scratch_dir());
  auto& m = *f.model;
  auto tokens = random_tokens(f.shape, 2, 32, 3);
  torch::NoGradGuard no_grad;
  auto before = m.forward(tokens);
  fm::permute_units(m, fm::random_unit_order(m.config(), 7));
  EXPECT_LT(max_diff(m.forward(tokens), before), 1e-10);

  auto result = flextron::train::rank_by_importance(m, random_tokens(f.shape, 8, 32, 11));
  bool moved_heads = false, moved_neurons = false;
  for (size_t l = 0; l < result.order.mlp.size(); ++l) {
    for (size_t i = 0; i < result.order.kv_groups[l].size(); ++i)
      moved_heads |= result.order.kv_groups[l][i] != static_cast<int64_t>(i);
    for (size_t i = 0; i < result.order.mlp[l].size(); ++i)
      moved_neurons |= result.order.mlp[l][i] != static_cast<int64_t>(i);
  }
  ASSERT_TRUE(moved_heads && moved_neurons);
  EXPECT_LT(max_diff(m.forward(tokens), before), 1e-10);
  // After ranking, the kept prefix holds the highest-scoring units: rescoring is descending.
  auto rescored = flextron::train::score_importance(m, random_tokens(f.shape, 8, 32, 11));
  for (const auto& scores : rescored.kv_groups) {
    auto sorted = std::get<0>(scores.sort(0, /*descending=*/true));
    EXPECT_LT(max_diff(sorted, scores), 1e-9);
  }
}

TEST(Gpt2Model, ExtractionEqualsTheElasticModelAndSavesAsGpt2) {
  const auto root = ft::scratch_dir();
  auto f = make_fixture(root / "base", false);
  auto& m = *f.model;
  auto tokens = random_tokens(f.shape, 2, 24, 5);
  torch::NoGradGuard no_grad;
  for (uint64_t seed : {1, 2, 3}) {
    const auto arch = random_architecture(m.config(), seed);
    auto dense = fm::extract_subnetwork(m, arch);
    auto elastic = m.forward(tokens, nullptr, &arch);
    EXPECT_LT(max_diff(dense->forward(tokens), elastic), 1e-10);
    EXPECT_EQ(dense->parameter_count(), fm::subnetwork_parameter_count(m.config(), arch));
    const auto dir = root / ("dense" + std::to_string(seed));
    flextron::io::save_model_dir(dir, *dense, nullptr);
    EXPECT_EQ(flextron::io::read_json_file(dir / "config.json")["model_type"], "gpt2");
    LoadOptions options;
    options.dtype = torch::kDouble;
    auto loaded = flextron::io::load_model_dir(dir, options).model;
    EXPECT_EQ(fm::full_architecture(loaded->config()), arch);
    EXPECT_LT(max_diff(loaded->forward(tokens), elastic), 1e-10);
  }
}

}  // namespace
