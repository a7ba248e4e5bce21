// The elastic network on a real model: the elastic space and architecture forms, importance
// ranking (function unchanged, better than chance), and extraction (equal to the elastic model).
#include <random>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "model/extract.h"
#include "model/permutation.h"
#include "stories260k.h"
#include "train/importance.h"

namespace {

using flextron::Error;
using flextron::model::Architecture;
using flextron::testing::load_stories260k;
using flextron::testing::sample_sequences;
namespace fm = flextron::model;

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Mean next-token cross-entropy of `tokens` [N, T] at `arch`.
double mean_nll(fm::TransformerImpl& m, const torch::Tensor& tokens, const Architecture& arch) {
  torch::NoGradGuard no_grad;
  auto logits = m.forward(tokens.narrow(1, 0, tokens.size(1) - 1), nullptr, &arch);
  auto targets = tokens.narrow(1, 1, tokens.size(1) - 1);
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              targets.reshape({-1}))
      .item<double>();
}

// stories260K's shape: 5 layers, 172 neurons, 4 KV groups of 2 heads of 8.
fm::ModelConfig stories_config() {
  fm::ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 5;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  return c;
}

TEST(ElasticSpace, DefaultGridRoundsFractionsToMultiplesOfEight) {
  const auto space = fm::default_elastic_space(stories_config());
  ASSERT_EQ(space.mlp.size(), 5u);
  // 172 * {1/4, 3/8, 1/2, 5/8, 3/4, 7/8} = 43, 64.5, 86, 107.5, 129, 150.5 -> nearest 8s.
  const std::vector<int64_t> mlp{40, 64, 88, 104, 128, 152, 172};
  const std::vector<int64_t> kv{1, 2, 3, 4};
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_EQ(space.mlp[l], mlp);
    EXPECT_EQ(space.kv_groups[l], kv);
  }
  fm::ElasticSpaceOptions options;
  options.mlp_fractions = {0.5};
  options.attn_fractions = {0.5};
  options.mlp_multiple = 16;
  const auto custom = fm::default_elastic_space(stories_config(), options);
  EXPECT_EQ(custom.mlp[0], (std::vector<int64_t>{80, 172}));  // 86 -> 5 * 16
  EXPECT_EQ(custom.kv_groups[0], (std::vector<int64_t>{2, 4}));
}

TEST(ElasticSpace, JsonRoundTripAndDisagreementWithTheModel) {
  const auto config = stories_config();
  auto space = fm::default_elastic_space(config);
  space.ranked = true;
  auto j = fm::elastic_space_to_json(space);
  auto back = fm::elastic_space_from_json(j, config, "flextron.json");
  EXPECT_EQ(back.mlp, space.mlp);
  EXPECT_EQ(back.kv_groups, space.kv_groups);
  EXPECT_TRUE(back.ranked);

  auto expect_error = [&](nlohmann::json bad, const std::string& needle) {
    try {
      fm::elastic_space_from_json(bad, config, "flextron.json");
      ADD_FAILURE() << "accepted: " << bad.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto wider = j;
  wider["mlp_widths"][2] = {64, 200};
  expect_error(wider, "outside [1, 172]");
  auto no_full = j;
  no_full["attention_kv_groups"][0] = {1, 2};
  expect_error(no_full, "must include the full width 4");
  auto layers = j;
  layers["mlp_widths"].erase(0);
  expect_error(layers, "lists 4 MLP and 5 attention layers");
  auto unsorted = j;
  unsorted["mlp_widths"][1] = {88, 40, 172};
  expect_error(unsorted, "strictly ascending");
  auto format = j;
  format["format"] = "other";
  expect_error(format, "format");
}

TEST(ElasticSpace, ArchitectureTextForms) {
  const auto config = stories_config();
  const auto space = fm::default_elastic_space(config);
  auto uniform = fm::parse_architecture("mlp=0.5,attn=0.75", config, space);
  EXPECT_EQ(uniform, Architecture(5, fm::LayerWidths{88, 3}));
  auto mlp_only = fm::parse_architecture("mlp=40", config, space);  // unit count
  EXPECT_EQ(mlp_only, Architecture(5, fm::LayerWidths{40, 4}));
  auto layers =
      fm::parse_architecture("mlp:0.25,0.5,1,0.75,104;attn:1,0.5,0.25,1,3", config, space);
  const Architecture expected{{40, 4}, {88, 2}, {172, 1}, {128, 4}, {104, 3}};
  EXPECT_EQ(layers, expected);

  const auto dir = flextron::testing::scratch_dir();
  flextron::io::write_text_atomically(dir / "arch.json", fm::architecture_to_json(expected).dump());
  EXPECT_EQ(fm::parse_architecture((dir / "arch.json").string(), config, space), expected);

  auto expect_error = [&](const std::string& text, const std::string& needle) {
    try {
      fm::parse_architecture(text, config, space);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("mlp=0.55", "MLP width 96 is not in the elastic space (allowed: 40, 64, 88");
  expect_error("mlp=100", "MLP width 100 is not in the elastic space");
  expect_error("attn=5", "outside [1, 4]");
  expect_error("mlp=0", "must be positive");
  expect_error("mlp=half", "not a number");
  expect_error("mlp=2.5", "neither a fraction");
  expect_error("heads=0.5", "unknown kind \"heads\"");
  expect_error("mlp:0.5,0.5,0.5", "mlp lists 3 widths, the model has 5 layers");
  expect_error("0.5", "expected");
  flextron::io::write_text_atomically(dir / "short.json",
                                      R"({"layers": [{"mlp": 40, "kv_groups": 1}]})");
  expect_error((dir / "short.json").string(), "architecture has 1 layers, the model has 5");
  flextron::io::write_text_atomically(dir / "broken.json", "{\"layers\": [");
  expect_error((dir / "broken.json").string(), "invalid JSON");
}

TEST(ElasticSpace, ModelDirectoryWithAMismatchedSpaceFailsToLoad) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  const auto dir = flextron::testing::scratch_dir();
  auto space = fm::default_elastic_space(m->config());
  flextron::io::save_model_dir(dir, *m, nullptr, &space);
  EXPECT_NO_THROW(flextron::io::load_model_dir(dir));
  auto j = fm::elastic_space_to_json(space);
  j["mlp_widths"] = std::vector<int64_t>{64, 256};  // one list for every layer, wider than 172
  flextron::io::write_text_atomically(dir / "flextron.json", j.dump());
  try {
    flextron::io::load_model_dir(dir);
    ADD_FAILURE() << "a space wider than the weights loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("flextron.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("256 outside [1, 172]"), std::string::npos) << e.what();
  }
}

// Any permutation of units computes the same function (float64: exact up to rounding).
TEST(Ranking, RandomPermutationKeepsTheFunction) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  m->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  auto tokens = torch::randint(3, 512, {2, 40}, torch::kLong);
  auto before = m->forward(tokens);
  fm::permute_units(*m, fm::random_unit_order(m->config(), 7));
  EXPECT_LT(max_diff(m->forward(tokens), before), 1e-10);
  // ...while a prefix now selects other units, so reduced widths compute something else.
  fm::UnitOrder bad = fm::random_unit_order(m->config(), 8);
  bad.mlp[1][0] = bad.mlp[1][1];
  EXPECT_THROW(fm::permute_units(*m, bad), Error);
}

// Ranking on sampled text: full-width logits unchanged (1e-4) and greedy decoding identical to
// llama2.c's reference continuation.
TEST(Ranking, RankedModelKeepsLogitsAndGreedyGeneration) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto original = load_stories260k();
  auto ranked = load_stories260k();
  auto calibration = sample_sequences(*original, 32, 128, 1);
  auto result = flextron::train::rank_by_importance(*ranked, calibration);
  // The order is not the identity in every layer (otherwise this test proves nothing).
  bool moved = false;
  for (const auto& order : result.order.mlp)
    for (size_t i = 0; i < order.size(); ++i) moved |= order[i] != static_cast<int64_t>(i);
  ASSERT_TRUE(moved);

  auto ref = nlohmann::json::parse(flextron::testing::read_file(
      flextron::testing::shared_data() / "stories260K/reference_once_upon_a_time.json"));
  auto prompt = torch::tensor(ref["prompt_tokens"].get<std::vector<int64_t>>()).unsqueeze(0);
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_diff(ranked->forward(prompt), original->forward(prompt)), 1e-4);
  auto held_out = sample_sequences(*original, 4, 64, 99);
  EXPECT_LT(max_diff(ranked->forward(held_out), original->forward(held_out)), 1e-4);

  const auto expected = ref["greedy_continuation"].get<std::vector<int64_t>>();
  auto cache = ranked->make_cache(1, 512);
  int64_t next = ranked->forward(prompt, &cache)[0][-1].argmax().item<int64_t>();
  std::vector<int64_t> got;
  while (got.size() < expected.size()) {
    got.push_back(next);
    next = ranked->forward(torch::full({1, 1}, next, torch::kLong), &cache)[0][0]
               .argmax()
               .item<int64_t>();
  }
  EXPECT_EQ(got, expected);
}

// At a uniform 50% MLP width with no training, ranked units beat random ones on held-out text.
TEST(Ranking, ImportanceBeatsRandomOrderAtHalfWidth) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  auto calibration = sample_sequences(*m, 32, 128, 1);
  auto held_out = sample_sequences(*m, 32, 128, 2);
  const Architecture half(5, fm::LayerWidths{88, 4});
  const double unranked = mean_nll(*m, held_out, half);
  double random_sum = 0.0;
  for (uint64_t seed : {11, 12, 13}) {
    auto r = load_stories260k();
    fm::permute_units(*r, fm::random_unit_order(r->config(), seed));
    random_sum += mean_nll(*r, held_out, half);
  }
  flextron::train::rank_by_importance(*m, calibration);
  const double ranked = mean_nll(*m, held_out, half);
  const double random = random_sum / 3;
  EXPECT_LT(ranked, random) << "ranked " << ranked << " random " << random;
  std::cout << "[ held-out NLL at 50% MLP ] ranked " << ranked << ", random " << random
            << ", original order " << unranked << "\n";
}

// With one calibration sequence the aggregations reduce to known values: l2 = mean = the score,
// variance = 0; and every score is positive and finite.
TEST(Ranking, AggregationsAgreeOnOneSequence) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  auto one = sample_sequences(*m, 1, 32, 3);
  flextron::train::ImportanceOptions options;
  auto l2 = flextron::train::score_importance(*m, one, options);
  options.aggregation = flextron::train::Aggregation::Mean;
  auto mean = flextron::train::score_importance(*m, one, options);
  options.aggregation = flextron::train::Aggregation::Variance;
  auto variance = flextron::train::score_importance(*m, one, options);
  for (size_t l = 0; l < 5; ++l) {
    EXPECT_LT(max_diff(l2.mlp[l], mean.mlp[l]), 1e-9);
    EXPECT_LT(max_diff(l2.kv_groups[l], mean.kv_groups[l]), 1e-9);
    EXPECT_LT(variance.mlp[l].abs().max().item<double>(), 1e-9);
    EXPECT_GT(l2.mlp[l].min().item<double>(), 0.0);
    EXPECT_EQ(l2.kv_groups[l].size(0), 4);
    // A KV group scores the sum of its two query heads.
    EXPECT_LT(max_diff(l2.kv_groups[l], l2.heads[l].view({4, 2}).sum(1)), 1e-12);
  }
}

// Extraction: the dense model equals the elastic model at that architecture (1e-5) for random
// architectures from the space, survives a save/load round trip, and is smaller.
TEST(Extraction, EqualsElasticModelAtRandomArchitectures) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  const auto space = fm::default_elastic_space(m->config());
  std::mt19937_64 rng(5);
  auto pick = [&](const std::vector<int64_t>& v) {
    return v[rng() % v.size()];
  };
  auto tokens = sample_sequences(*m, 2, 48, 4);
  torch::NoGradGuard no_grad;
  for (int trial = 0; trial < 3; ++trial) {
    Architecture arch;
    for (size_t l = 0; l < 5; ++l) arch.push_back({pick(space.mlp[l]), pick(space.kv_groups[l])});
    auto dense = fm::extract_subnetwork(*m, arch);
    EXPECT_LT(max_diff(dense->forward(tokens), m->forward(tokens, nullptr, &arch)), 1e-5)
        << fm::describe_architecture(arch, m->config());
    const auto dir = flextron::testing::scratch_dir() / std::to_string(trial);
    flextron::io::save_model_dir(dir, *dense, nullptr);
    auto loaded = flextron::io::load_model_dir(dir);
    EXPECT_EQ(fm::full_architecture(loaded.model->config()), arch);
    EXPECT_LT(max_diff(loaded.model->forward(tokens), m->forward(tokens, nullptr, &arch)), 1e-5);
  }
  // A uniform architecture gives a plain HF Llama config (no per-layer lists).
  auto uniform = fm::extracted_config(m->config(), Architecture(5, fm::LayerWidths{88, 2}));
  EXPECT_FALSE(uniform.heterogeneous());
  EXPECT_EQ(uniform.intermediate_size, 88);
  EXPECT_EQ(uniform.num_attention_heads, 4);
  EXPECT_EQ(uniform.head_dim(), 8);
}

// Cached decoding of an extracted heterogeneous model equals its full forward.
TEST(Extraction, CachedDecodingOfExtractedModelEqualsFullForward) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = load_stories260k();
  const Architecture arch{{40, 1}, {172, 4}, {88, 2}, {64, 3}, {152, 1}};
  auto dense = fm::extract_subnetwork(*m, arch);
  auto tokens = sample_sequences(*m, 1, 30, 6);
  torch::NoGradGuard no_grad;
  auto full = dense->forward(tokens);
  auto cache = dense->make_cache(1, 30);
  std::vector<torch::Tensor> parts{dense->forward(tokens.narrow(1, 0, 10), &cache)};
  for (int64_t t = 10; t < 30; ++t) parts.push_back(dense->forward(tokens.narrow(1, t, 1), &cache));
  EXPECT_LT(max_diff(torch::cat(parts, 1), full), 1e-4);
}

}  // namespace
