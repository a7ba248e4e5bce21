// Routers on stories260K (ranked) with a latency table known in closed form: the surrogate ranks
// held-out architectures, the static router honours every budget and is deterministic, the
// budget table survives a save/load, and the dynamic router's execution paths are exact.
#include <cmath>
#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "route/budget_table.h"
#include "route/dynamic_router.h"
#include "route/routed_training.h"
#include "route/router_file.h"
#include "route/surrogate.h"
#include "route_fixtures.h"
#include "runtime/fast_decoder.h"
#include "runtime/quantized_reference.h"
#include "test_util.h"

namespace fr = flextron::route;
namespace fm = flextron::model;

TEST(Choices, EncodeDecodeAndMasks) {
  auto space = fm::default_elastic_space(fm::ModelConfig{});
  fr::ChoiceLayout layout(space);
  EXPECT_EQ(layout.size(), 5 * (7 + 4));
  auto arch = fm::narrowest_architecture(space);
  arch[2] = {space.mlp[2][4], space.kv_groups[2][2]};
  auto code = layout.encode(arch);
  EXPECT_EQ(code.sum().item<double>(), 10.0);
  EXPECT_EQ(layout.decode(code), arch);
  EXPECT_EQ(layout.from_indices(layout.indices(arch)), arch);
  auto inc = fr::inclusion_matrix({2, 3, 5});
  EXPECT_TRUE(torch::equal(
      inc,
      torch::tensor({1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1}).view({3, 5}).to(torch::kFloat)));
}

TEST(Choices, StraightThroughGumbelSoftmax) {
  torch::manual_seed(0);
  auto logits = torch::randn({6, 5}, torch::requires_grad());
  auto y = fr::gumbel_softmax_hard(logits, 0.5, true);
  // Forward: exact one-hots.
  EXPECT_TRUE(torch::equal(y.sum(-1), torch::ones({6})));
  EXPECT_TRUE(torch::equal((y == 0) | (y == 1), torch::ones({6, 5}, torch::kBool)));
  // Backward: the softmax's gradient (non-zero, and rows sum to zero as softmax gradients do).
  (y * torch::arange(5).to(torch::kFloat)).sum().backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0.0);
  EXPECT_LT(logits.grad().sum(-1).abs().max().item<double>(), 1e-5);
  // Without noise it is the argmax.
  auto y0 = fr::gumbel_softmax_hard(logits.detach(), 1.0, false);
  EXPECT_TRUE(torch::equal(y0.argmax(-1), logits.detach().argmax(-1)));
}

TEST(Surrogate, SpearmanIsRankCorrelation) {
  EXPECT_DOUBLE_EQ(fr::spearman({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(fr::spearman({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  EXPECT_NEAR(fr::spearman({1, 2, 3, 4, 5}, {1, 3, 2, 5, 4}), 0.8, 1e-12);
  EXPECT_THROW(fr::spearman({1}, {1}), flextron::Error);
}

class StoriesRouter : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(flextron::testing::shared_data() / "stories260K"))
      GTEST_SKIP() << "no shared data";
    torch::manual_seed(0);
    stories_ = flextron::testing::ranked_stories();
    table_ = flextron::testing::synthetic_table(stories_.model->config(), stories_.space);
  }
  // Every step: the same 4 sequences (normal tensors: sample_sequences makes inference tensors,
  // which autograd cannot save), routed around the full architecture.
  std::pair<fr::BatchSource, fr::BaseArchitecture> same_batch_from_the_full_model() {
    auto seqs = stories_.sequences.narrow(0, 0, 4).clone();
    fr::BatchSource batches = [seqs](int64_t) {
      return std::make_pair(seqs.narrow(1, 0, 64), seqs.narrow(1, 1, 64));
    };
    auto widest = fm::widest_architecture(stories_.space);
    fr::BaseArchitecture base = [widest](double) {
      return widest;
    };
    return {batches, base};
  }
  flextron::testing::RankedStories stories_;
  fr::LatencyTable table_;
};

TEST_F(StoriesRouter, SurrogateRanksHeldOutArchitectures) {
  fr::ChoiceLayout layout(stories_.space);
  auto oracle = flextron::testing::sequence_oracle(*stories_.model, stories_.sequences);
  auto train = fr::sample_spread_architectures(stories_.space, 48, 1);
  auto held = fr::sample_spread_architectures(stories_.space, 24, 2);
  auto train_loss = oracle(train), held_loss = oracle(held);
  std::vector<fr::LossSample> samples;
  for (size_t i = 0; i < train.size(); ++i) samples.push_back({train[i], train_loss[i]});
  fr::Surrogate sm(layout.size(), 128);
  fr::fit_surrogate(*sm, layout, samples, {});
  const double rho = fr::spearman(fr::predict_losses(*sm, layout, held), held_loss);
  EXPECT_GT(rho, 0.8);
}

TEST_F(StoriesRouter, StaticRouterHonoursBudgetsDeterministically) {
  const std::vector<double> budgets{0.5, 0.6, 0.7, 0.8, 0.9, 1.0};
  auto bundle = fr::make_routers(stories_.model->config(), stories_.space, budgets, false);
  const auto& layout = *bundle.layout;
  fr::StaticRouterTrainOptions o;
  o.steps = 150;
  o.check_every = 50;
  o.surrogate_samples = 32;
  o.fit.epochs = 600;
  auto report = fr::train_static_router(
      *bundle.router, *bundle.surrogate, layout, table_,
      flextron::testing::sequence_oracle(*stories_.model, stories_.sequences), o);
  EXPECT_GT(report.surrogate_heldout_spearman, 0.5);
  EXPECT_EQ(report.log.size(), 3u);
  bundle.table = fr::build_budget_table(*bundle.router, *bundle.surrogate, layout, table_,
                                        stories_.model->config(), torch::kFloat);
  for (double b : budgets) {
    auto arch = fr::route_static(*bundle.router, *bundle.surrogate, layout, table_, b);
    EXPECT_LE(fr::latency_fraction(table_, arch), b * 1.02) << b;
    // Same budget, same answer (no sampling at inference), and the cached table agrees.
    EXPECT_EQ(fr::route_static(*bundle.router, *bundle.surrogate, layout, table_, b), arch);
    EXPECT_EQ(fr::lookup_budget(bundle.table, {b, fr::BudgetKind::Latency}).arch, arch);
  }
  // The full budget gets the full model. A larger budget may get a slightly faster architecture
  // only when it is predicted better (the router's projection is per budget), never a worse one.
  EXPECT_EQ(fr::lookup_budget(bundle.table, {1.0, fr::BudgetKind::Latency}).arch,
            fm::widest_architecture(stories_.space));
  for (size_t i = 1; i < bundle.table.size(); ++i) {
    const auto &e = bundle.table[i], &previous = bundle.table[i - 1];
    EXPECT_GE(e.latency_fraction, previous.latency_fraction - 0.01) << e.budget;
    if (e.latency_fraction < previous.latency_fraction) {
      EXPECT_LT(e.predicted_loss, previous.predicted_loss) << e.budget;
    }
  }
  // Other budget kinds look up the same table.
  const auto& by_params = fr::lookup_budget(bundle.table, {0.6, fr::BudgetKind::Params});
  EXPECT_LE(by_params.params_fraction, 0.6);

  // Below the narrowest architecture: an error naming the smallest achievable budget.
  const double smallest = fr::latency_fraction(table_, fm::narrowest_architecture(stories_.space));
  try {
    fr::lookup_budget(bundle.table, {smallest * 0.9, fr::BudgetKind::Latency});
    FAIL() << "expected an error";
  } catch (const flextron::Error& e) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", smallest);
    EXPECT_NE(std::string(e.what()).find(std::string("smallest achievable ") + buf),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(fr::route_static(*bundle.router, *bundle.surrogate, layout, table_, smallest * 0.9),
               flextron::Error);

  // Saved and loaded, the routers answer the same.
  const auto dir = flextron::testing::scratch_dir();
  fr::save_routers(dir, bundle);
  auto back = fr::load_routers(dir, stories_.model->config(), stories_.space);
  ASSERT_EQ(back.table.size(), bundle.table.size());
  for (double b : budgets) {
    EXPECT_EQ(fr::route_static(*back.router, *back.surrogate, layout, table_, b),
              fr::lookup_budget(bundle.table, {b, fr::BudgetKind::Latency}).arch);
  }
  auto other_space = stories_.space;
  other_space.mlp[0].erase(other_space.mlp[0].begin());
  EXPECT_THROW(fr::load_routers(dir, stories_.model->config(), other_space), flextron::Error);
}

TEST_F(StoriesRouter, UniformBaselineFillsTheBudget) {
  fr::ChoiceLayout layout(stories_.space);
  auto arch = fr::uniform_architecture(layout, table_, stories_.model->config(), torch::kFloat,
                                       {0.7, fr::BudgetKind::Latency});
  EXPECT_TRUE(fm::is_uniform(arch));
  // By the closed-form table: "mlp=104, attn=2" predicts 0.660, the next level (128, 3) 0.800.
  EXPECT_EQ(arch[0], (fm::LayerWidths{104, 2}));
  EXPECT_NEAR(fr::latency_fraction(table_, arch), 0.660, 0.001);
}

TEST_F(StoriesRouter, MaskedMlpEqualsEachTokenAtItsOwnWidth) {
  // The dynamic router's per-token widths run as one masked MLP: row t must equal the MLP of
  // token t alone at width w_t.
  torch::NoGradGuard no_grad;
  auto& mlp = *stories_.model->layer(2).mlp;
  auto x = torch::randn({1, 4, 64});
  const std::vector<int64_t> widths{40, 172, 88, 128};
  auto mask = torch::zeros({1, 4, 172});
  for (int64_t t = 0; t < 4; ++t) mask[0][t].narrow(0, 0, widths[t]).fill_(1.0);
  auto masked = mlp.forward(x, 172, mask);
  for (int64_t t = 0; t < 4; ++t) {
    auto alone = mlp.forward(x.narrow(1, t, 1), widths[t]);
    EXPECT_LT((masked.narrow(1, t, 1) - alone).abs().max().item<double>(), 1e-5) << t;
  }
}

TEST_F(StoriesRouter, UntrainedDynamicRouterRoutesLikeItsStaticArchitecture) {
  fr::ChoiceLayout layout(stories_.space);
  fr::DynamicRouter dynamic(layout, 64, 6);
  auto arch = fm::narrowest_architecture(stories_.space);
  arch[1] = {stories_.space.mlp[1][5], stories_.space.kv_groups[1][3]};
  arch[4] = {stories_.space.mlp[4][2], stories_.space.kv_groups[4][1]};
  auto code = torch::zeros({6});
  code[2] = 1.0;
  dynamic->set_budget(code, fr::base_logits(layout, arch));
  dynamic->set_costs(layout.cost_ms(table_));
  torch::NoGradGuard no_grad;
  auto tokens = stories_.sequences.narrow(1, 0, 32);
  auto routed = stories_.model->forward(tokens, nullptr, nullptr, dynamic.get());
  auto fixed = stories_.model->forward(tokens, nullptr, &arch);
  EXPECT_TRUE(torch::equal(routed, fixed));
  // Cached decoding with the router (KV cache allocated at prefill) equals the full forward.
  auto one = tokens.narrow(0, 0, 1);
  auto cache = stories_.model->make_cache(1, 32, nullptr, /*lazy=*/true);
  auto prefill = stories_.model->forward(one.narrow(1, 0, 20), &cache, nullptr, dynamic.get());
  std::vector<torch::Tensor> steps{prefill};
  for (int64_t t = 20; t < 32; ++t)
    steps.push_back(stories_.model->forward(one.narrow(1, t, 1), &cache, nullptr, dynamic.get()));
  auto cached = torch::cat(steps, 1);
  EXPECT_LT((cached - stories_.model->forward(one, nullptr, &arch)).abs().max().item<double>(),
            1e-4);
  EXPECT_EQ(cache.keys[1].size(1), arch[1].kv_groups);  // allocated at the routed width
}

// The dynamic router on the fast engine (its host path, runtime/fast_decoder.h) against the
// torch forward with the same router: a router with random corrections, so that widths vary
// token by token, gives the same MLP width at every layer of every decode step and the same
// logits.
TEST_F(StoriesRouter, DynamicRouterOnTheFastEngineEqualsTheTorchPath) {
  fr::ChoiceLayout layout(stories_.space);
  fr::DynamicRouter dynamic(layout, 64, 6);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(21);
    for (auto& p : dynamic->parameters()) p.normal_(0.0, 0.5);
  }
  auto code = torch::zeros({6});
  code[3] = 1.0;
  dynamic->set_budget(code, fr::base_logits(layout, fm::widest_architecture(stories_.space)));
  dynamic->set_costs(layout.cost_ms(table_));
  ASSERT_TRUE(dynamic->routes_on_host());
  // fp32, and q4_0 on the exact path against the torch forward of the dequantized model.
  namespace qk = flextron::runtime::qk;
  for (auto format : {qk::WeightFormat::F32, qk::WeightFormat::Q4_0}) {
    SCOPED_TRACE(qk::format_name(format));
    fm::Transformer dequantized{nullptr};
    if (format != qk::WeightFormat::F32)
      dequantized = flextron::testing::dequantized_copy(*stories_.model, format);
    auto& m = format == qk::WeightFormat::F32 ? *stories_.model : *dequantized;
    flextron::runtime::EngineOptions options{2, 16};
    options.format = format;
    options.exact = true;
    flextron::runtime::FastDecoder engine(*stories_.model, options);
    torch::NoGradGuard no_grad;
    auto one = stories_.sequences.narrow(0, 0, 1).narrow(1, 0, 40);
    const int64_t prompt = 12, length = 40, vocab = m.config().vocab_size;

    // Torch: a routed prefill, then decode steps, recording each step's widths.
    auto cache = m.make_cache(1, length, nullptr, /*lazy=*/true);
    m.forward(one.narrow(1, 0, prompt), &cache, nullptr, dynamic.get());
    auto engine_cache = engine.cache_from(cache, length);  // before the torch steps extend it
    auto arch = fm::full_architecture(m.config());
    for (size_t l = 0; l < arch.size(); ++l) {
      arch[l].kv_groups = engine_cache.kv_groups(static_cast<int64_t>(l));
      EXPECT_EQ(arch[l].kv_groups, cache.keys[l].size(1));
    }
    std::vector<torch::Tensor> torch_logits;
    std::vector<std::vector<double>> torch_widths, engine_widths;
    for (int64_t t = prompt; t < length; ++t) {
      dynamic->reset_usage();
      torch_logits.push_back(m.forward(one.narrow(1, t, 1), &cache, nullptr, dynamic.get())[0][0]);
      torch_widths.push_back(dynamic->mean_mlp_widths());
    }
    std::set<double> seen;
    for (int64_t t = prompt; t < length; ++t) {
      dynamic->reset_usage();
      const float* logits =
          engine.decode(one[0][t].item<int64_t>(), engine_cache, arch, dynamic.get());
      engine_widths.push_back(dynamic->mean_mlp_widths());
      const auto i = static_cast<size_t>(t - prompt);
      EXPECT_EQ(engine_widths[i], torch_widths[i]) << "step " << t;
      auto row = torch::from_blob(const_cast<float*>(logits), {vocab}, torch::kFloat);
      EXPECT_LT((row - torch_logits[i]).abs().max().item<double>(), 1e-4) << "step " << t;
      for (double w : engine_widths[i]) seen.insert(w);
    }
    EXPECT_GT(seen.size(), 2u) << "the router should vary widths between tokens and layers";
  }
}

TEST_F(StoriesRouter, DynamicTrainingLeavesTheFrozenModelAlone) {
  const std::vector<double> budgets{0.6, 0.8, 1.0};
  auto bundle = fr::make_routers(stories_.model->config(), stories_.space, budgets, true);
  const auto& layout = *bundle.layout;
  auto before = stories_.model->state();
  std::map<std::string, torch::Tensor> copies;
  for (const auto& [name, t] : before) copies[name] = t.clone();
  auto dynamic_before = bundle.dynamic->parameters()[2].clone();  // a correction's last layer
  fr::RoutedTrainOptions o;
  o.steps = 6;
  o.router_lr = 1e-2;
  auto [batches, base] = same_batch_from_the_full_model();
  auto summary = fr::train_routed(*stories_.model, *bundle.router, bundle.dynamic.get(), base,
                                  layout, table_, batches, o);
  EXPECT_TRUE(std::isfinite(summary["final_lm_loss"].get<double>()));
  for (const auto& [name, t] : stories_.model->state())
    EXPECT_TRUE(torch::equal(t, copies[name])) << name;
  EXPECT_FALSE(torch::equal(bundle.dynamic->parameters()[2], dynamic_before));
  for (const auto& p : stories_.model->parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST_F(StoriesRouter, JointFineTuneTrainsModelAndRouters) {
  const std::vector<double> budgets{0.6, 1.0};
  auto bundle = fr::make_routers(stories_.model->config(), stories_.space, budgets, true);
  const auto& layout = *bundle.layout;
  auto weight_before = stories_.model->state().at("model.layers.0.mlp.up_proj.weight").clone();
  auto router_before = bundle.router->parameters()[0].clone();
  fr::RoutedTrainOptions o;
  o.steps = 4;  // alternating static and dynamic steps
  o.train_model = true;
  o.train_static = true;
  o.model_lr = 1e-3;
  auto [batches, base] = same_batch_from_the_full_model();
  auto summary = fr::train_routed(*stories_.model, *bundle.router, bundle.dynamic.get(), base,
                                  layout, table_, batches, o);
  EXPECT_TRUE(std::isfinite(summary["final_lm_loss"].get<double>()));
  EXPECT_FALSE(
      torch::equal(stories_.model->state().at("model.layers.0.mlp.up_proj.weight"), weight_before));
  EXPECT_FALSE(torch::equal(bundle.router->parameters()[0], router_before));
}

// Quality targets on a hand-made budget table: loss falls as latency grows, the full model last.
TEST(QualityBudget, FastestEntryWithinTheTarget) {
  std::vector<fr::BudgetEntry> table;
  const std::vector<std::pair<double, double>> latency_loss{
      {0.40, 2.60}, {0.50, 2.30}, {0.60, 2.12}, {0.80, 2.03}, {1.00, 2.00}};
  for (const auto& [latency, loss] : latency_loss) {
    fr::BudgetEntry e;
    e.budget = latency;
    e.latency_fraction = latency;
    e.predicted_loss = loss;
    table.push_back(e);
  }
  auto pick = [&](const std::string& text) {
    fr::Budget b;
    b.kind = fr::BudgetKind::Quality;
    b.quality = fr::parse_quality_target(text, "--budget");
    return fr::lookup_budget(table, b).latency_fraction;
  };
  // The full model's own loss: the full model, whatever the order of the table.
  EXPECT_DOUBLE_EQ(pick("ppl+0%"), 1.0);
  EXPECT_DOUBLE_EQ(pick("loss+0"), 1.0);
  EXPECT_DOUBLE_EQ(pick("loss<=2"), 1.0);
  // exp(0.03) - 1 = 3.05%: 0.8 is within 4% of the full model's perplexity, 0.6 (12.7%) is not.
  EXPECT_DOUBLE_EQ(pick("ppl+4%"), 0.8);
  EXPECT_DOUBLE_EQ(pick("ppl+13%"), 0.6);
  EXPECT_DOUBLE_EQ(pick("loss+0.31"), 0.5);
  EXPECT_DOUBLE_EQ(pick("loss+5"), 0.4);
  // exp(2) = 7.389; +0.9 perplexity allows loss log(8.289) = 2.115: not 0.6 (2.12).
  EXPECT_DOUBLE_EQ(pick("ppl+0.9"), 0.8);
  EXPECT_DOUBLE_EQ(pick("ppl<=10"), 0.5);  // log 10 = 2.303 > 2.30
  // An entry predicted better than the full model does not meet a no-loss target.
  table[2].predicted_loss = 1.99;
  EXPECT_DOUBLE_EQ(pick("ppl+0%"), 1.0);
  EXPECT_DOUBLE_EQ(pick("ppl+1%"), 0.6);

  // Below the full model: an error naming the best achievable.
  try {
    pick("ppl<=7");
    FAIL() << "expected an error";
  } catch (const flextron::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("best achievable is the full model"), std::string::npos) << what;
    EXPECT_NE(what.find("ppl 7.389"), std::string::npos) << what;
  }
  // Malformed targets name the option and the forms.
  for (const char* bad : {"ppl", "ppl+", "ppl+x", "ppl+-2%", "loss<=0", "ppl<=0.5", "ppl+nan",
                          "loss+2%", "pplx2", "loss+1e999"}) {
    try {
      fr::parse_quality_target(bad, "--budget");
      FAIL() << bad;
    } catch (const flextron::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--budget"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(fr::looks_like_quality_target("ppl+2%"));
  EXPECT_FALSE(fr::looks_like_quality_target("0.5"));
}
