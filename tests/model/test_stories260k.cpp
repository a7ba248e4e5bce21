// The transformer against llama2.c's reference forward pass on a real checkpoint.
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/llama2c_checkpoint.h"
#include "model/transformer.h"
#include "stories260k.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

using flextron::testing::shared_data;

using flextron::testing::load_stories260k;

nlohmann::json read_json(const std::filesystem::path& path) {
  return nlohmann::json::parse(flextron::testing::read_file(path));
}

TEST(Stories260K, HeaderIsReadAsDocumented) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto ck = flextron::io::read_llama2c_checkpoint(shared_data() / "stories260K/stories260K.bin");
  EXPECT_EQ(ck.config.hidden_size, 64);
  EXPECT_EQ(ck.config.intermediate_size, 172);
  EXPECT_EQ(ck.config.num_hidden_layers, 5);
  EXPECT_EQ(ck.config.num_attention_heads, 8);
  EXPECT_EQ(ck.config.num_key_value_heads, 4);
  EXPECT_EQ(ck.config.vocab_size, 512);
  EXPECT_EQ(ck.config.max_position_embeddings, 512);
  EXPECT_TRUE(ck.config.tie_word_embeddings);
}

// Logits after each prompt token, full forward (no cache) vs the reference, max abs 1e-4.
TEST(Stories260K, PromptLogitsMatchReference) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto ref = read_json(shared_data() / "stories260K/reference_once_upon_a_time.json");
  auto m = load_stories260k();
  torch::NoGradGuard no_grad;
  auto tokens = ref["prompt_tokens"].get<std::vector<int64_t>>();
  auto logits = m->forward(torch::tensor(tokens).unsqueeze(0))[0];
  ASSERT_EQ(logits.size(0), static_cast<int64_t>(ref["logits"].size()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto expected = torch::tensor(ref["logits"][i].get<std::vector<float>>());
    const double err = (logits[i] - expected).abs().max().item<double>();
    EXPECT_LT(err, 1e-4) << "position " << i;
  }
}

// Greedy continuation with the KV cache equals the reference tokens exactly.
TEST(Stories260K, GreedyContinuationMatchesReference) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  for (const char* file : {"reference_once_upon_a_time.json", "reference_bos_greedy200.json"}) {
    auto ref = read_json(shared_data() / "stories260K" / file);
    auto m = load_stories260k();
    c10::InferenceMode guard;
    auto prompt = ref["prompt_tokens"].get<std::vector<int64_t>>();
    auto expected = ref["greedy_continuation"].get<std::vector<int64_t>>();
    auto cache = m->make_cache(1, m->config().max_position_embeddings);
    auto logits = m->forward(torch::tensor(prompt).unsqueeze(0), &cache);
    int64_t next = logits[0][-1].argmax().item<int64_t>();
    std::vector<int64_t> got;
    while (got.size() < expected.size()) {
      got.push_back(next);
      if (cache.length >= cache.capacity) break;
      next = m->forward(torch::full({1, 1}, next, torch::kLong), &cache)[0][0]
                 .argmax()
                 .item<int64_t>();
    }
    EXPECT_EQ(got, expected) << file;
  }
}

// Cached incremental decoding equals one full forward for every position, at full width and
// at a reduced architecture (fewer MLP neurons and KV groups per layer). In float64 the two
// must agree to rounding (1e-10), so any logic slip shows; in float32 within 1e-4 (summation
// order differs between a batched GEMM and one-row products).
class CachedDecoding : public ::testing::TestWithParam<torch::Dtype> {};

TEST_P(CachedDecoding, EqualsFullForward) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  m->to(GetParam());
  const double tolerance = GetParam() == torch::kDouble ? 1e-10 : 1e-4;
  torch::NoGradGuard no_grad;
  torch::manual_seed(0);
  auto tokens = torch::randint(3, 512, {2, 48}, torch::kLong);
  flextron::model::Architecture reduced;
  for (int64_t l = 0; l < 5; ++l) reduced.push_back({40 + 24 * l, 1 + l % 4});
  const std::vector<const flextron::model::Architecture*> archs = {nullptr, &reduced};
  for (const auto* arch : archs) {
    auto full = m->forward(tokens, nullptr, arch);
    auto cache = m->make_cache(2, 64, arch);
    // A prefill of 5 tokens, then one token at a time, then a chunk of 7.
    std::vector<torch::Tensor> parts;
    parts.push_back(m->forward(tokens.narrow(1, 0, 5), &cache, arch));
    for (int64_t t = 5; t < 41; ++t)
      parts.push_back(m->forward(tokens.narrow(1, t, 1), &cache, arch));
    parts.push_back(m->forward(tokens.narrow(1, 41, 7), &cache, arch));
    auto incremental = torch::cat(parts, 1);
    EXPECT_LT((incremental - full).abs().max().item<double>(), tolerance)
        << (arch ? "reduced" : "full");
  }
}

INSTANTIATE_TEST_SUITE_P(Stories260K, CachedDecoding,
                         ::testing::Values(torch::kDouble, torch::kFloat));

// Batched decoding of sequences at different positions (how the server steps requests that
// share an architecture) equals stepping each sequence alone, in float64 to rounding, at full
// width and at a reduced per-layer architecture.
TEST(Stories260K, BatchedDecodingOfUnequalSequencesEqualsSeparateSteps) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  m->to(torch::kDouble);
  c10::InferenceMode guard;
  torch::manual_seed(1);
  flextron::model::Architecture reduced;
  for (int64_t l = 0; l < 5; ++l) reduced.push_back({64 + 20 * l, 1 + (l + 1) % 4});
  const std::vector<const flextron::model::Architecture*> archs = {nullptr, &reduced};
  for (const auto* arch : archs) {
    const std::vector<int64_t> prompt_lengths = {3, 17, 9};
    std::vector<flextron::model::KVCache> alone, batched;
    std::vector<int64_t> next;
    for (int64_t len : prompt_lengths) {
      auto prompt = torch::randint(3, 512, {1, len}, torch::kLong);
      alone.push_back(m->make_cache(1, 40, arch));
      batched.push_back(m->make_cache(1, 40, arch));
      auto logits = m->forward(prompt, &alone.back(), arch);
      m->forward(prompt, &batched.back(), arch);
      next.push_back(logits[0][-1].argmax().item<int64_t>());
    }
    for (int step = 0; step < 6; ++step) {
      std::vector<flextron::model::KVCache*> caches;
      for (auto& c : batched) caches.push_back(&c);
      auto rows = m->decode_rows(next, caches, arch);
      ASSERT_EQ(rows.sizes(), torch::IntArrayRef({3, 512}));
      for (size_t b = 0; b < next.size(); ++b) {
        auto one = m->forward(torch::full({1, 1}, next[b], torch::kLong), &alone[b], arch)[0][0];
        EXPECT_LT((rows[b] - one).abs().max().item<double>(), 1e-10)
            << (arch ? "reduced" : "full") << " row " << b << " step " << step;
        EXPECT_EQ(batched[b].length, alone[b].length);
        next[b] = one.argmax().item<int64_t>();
      }
    }
  }
}

// A reduced architecture really is a smaller network: it equals a dense model built from the
// sliced weights (the identity extraction relies on).
TEST(Stories260K, PrefixArchitectureEqualsSlicedDenseModel) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  torch::NoGradGuard no_grad;
  auto config = m->config();
  config.intermediate_size = 96;
  config.num_key_value_heads = 2;
  config.num_attention_heads = 4;
  config.head_dim_override = 8;  // heads shrink, each head keeps its size
  flextron::model::Transformer small(config);
  auto state = m->state();
  flextron::io::TensorMap sliced;
  const int64_t hd = config.head_dim();
  for (const auto& [name, t] : state) {
    torch::Tensor s = t;
    if (name.find("q_proj") != std::string::npos) s = t.narrow(0, 0, 4 * hd);
    if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos)
      s = t.narrow(0, 0, 2 * hd);
    if (name.find("o_proj") != std::string::npos) s = t.narrow(1, 0, 4 * hd);
    if (name.find("gate_proj") != std::string::npos || name.find("up_proj") != std::string::npos)
      s = t.narrow(0, 0, 96);
    if (name.find("down_proj") != std::string::npos) s = t.narrow(1, 0, 96);
    sliced[name] = s.contiguous();
  }
  small->load_state(sliced, "sliced");
  flextron::model::Architecture arch(5, {96, 2});
  auto tokens = torch::randint(3, 512, {1, 32}, torch::kLong);
  auto elastic = m->forward(tokens, nullptr, &arch);
  auto dense = small->forward(tokens);
  EXPECT_LT((elastic - dense).abs().max().item<double>(), 1e-5);
  // And it is not the full model's function.
  EXPECT_GT((m->forward(tokens) - dense).abs().max().item<double>(), 1e-3);
}

TEST(Stories260K, ArchitectureOutsideTheModelIsRejected) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  auto tokens = torch::zeros({1, 4}, torch::kLong);
  flextron::model::Architecture too_few(4, {172, 4});
  EXPECT_THROW(flextron::model::check_architecture(m->config(), too_few, "arch"), flextron::Error);
  flextron::model::Architecture too_wide(5, {173, 4});
  EXPECT_THROW(flextron::model::check_architecture(m->config(), too_wide, "arch"), flextron::Error);
  flextron::model::Architecture zero_heads(5, {172, 0});
  EXPECT_THROW(flextron::model::check_architecture(m->config(), zero_heads, "arch"),
               flextron::Error);
}

}  // namespace
