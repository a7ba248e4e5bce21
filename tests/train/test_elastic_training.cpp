// Elastic continued training: architecture sampling, the distillation loss, data-parallel
// correctness (2 processes over loopback = 1 process), exact resume, bad input, and that it
// makes the sub-networks better without hurting the full model.
#include <cmath>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "stories260k.h"
#include "text/tokenizer.h"
#include "tools/cli_fixtures.h"
#include "train/elastic_training.h"
#include "train/importance.h"

namespace {

namespace fs = std::filesystem;
namespace fm = flextron::model;
namespace ft = flextron::train;
using flextron::testing::quote;
using flextron::testing::run_cli;
using flextron::testing::shared_data;

TEST(ElasticTraining, ArchitectureSamplingIsSeededAndStaysInTheSpace) {
  fm::ModelConfig c;
  const auto space = fm::default_elastic_space(c);
  int full = 0;
  for (int64_t step = 0; step < 300; ++step) {
    auto archs = ft::sample_architectures(space, ft::ArchSampling::Random, 1.0 / 3, 7, step);
    ASSERT_EQ(archs.size(), 1u);
    EXPECT_NO_THROW(fm::check_in_space(archs[0], space, c, "sampled"));
    EXPECT_EQ(archs, ft::sample_architectures(space, ft::ArchSampling::Random, 1.0 / 3, 7, step));
    full += archs[0] == fm::full_architecture(c);
  }
  EXPECT_GT(full, 60);  // ~100 expected at p = 1/3 (random draws are almost never all-full)
  EXPECT_LT(full, 140);
  auto sandwich = ft::sample_architectures(space, ft::ArchSampling::Sandwich, 0.0, 7, 3);
  ASSERT_EQ(sandwich.size(), 3u);
  EXPECT_EQ(sandwich[0], fm::full_architecture(c));
  EXPECT_EQ(sandwich[1], fm::Architecture(5, fm::LayerWidths{40, 1}));
  auto probes = ft::probe_architectures(space);
  ASSERT_EQ(probes.size(), 3u);
  EXPECT_EQ(probes[1].arch, fm::Architecture(5, fm::LayerWidths{88, 2}));
}

TEST(ElasticTraining, DistillationLossIsKlDivergence) {
  // p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln 1.5 + 1/4 ln 0.5.
  auto teacher = torch::tensor({std::log(3.0), 0.0}, torch::kDouble).view({1, 2});
  auto student = torch::zeros({1, 2}, torch::kDouble);
  const double expected = 0.75 * std::log(1.5) + 0.25 * std::log(0.5);
  EXPECT_NEAR(ft::distillation_loss(student, teacher).item<double>(), expected, 1e-12);
  EXPECT_NEAR(ft::distillation_loss(teacher, teacher).item<double>(), 0.0, 1e-12);
}

TEST(ElasticTraining, DistillationIsZeroForIdenticalTeacherAtFullWidth) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto student = flextron::testing::load_stories260k();
  auto teacher = flextron::testing::load_stories260k();
  auto tokens = flextron::testing::sample_sequences(*student, 4, 64, 1);
  torch::NoGradGuard no_grad;
  EXPECT_LT(
      ft::distillation_loss(student->forward(tokens), teacher->forward(tokens)).item<double>(),
      1e-6);
  const fm::Architecture half(5, fm::LayerWidths{88, 2});
  EXPECT_GT(
      ft::distillation_loss(student->forward(tokens, nullptr, &half), teacher->forward(tokens))
          .item<double>(),
      1e-2);
}

// A ranked stories260K and in-distribution text sampled from it, made per test (ctest runs tests
// in parallel processes, so nothing is shared between them).
class ElasticTrainingCli : public ::testing::Test {
 protected:
  void SetUp() override {
    FLEXTRON_REQUIRE_SHARED_DATA();
    dir_ = flextron::testing::scratch_dir();
    auto m = flextron::testing::load_stories260k();
    auto tok =
        flextron::text::load_llama2c_tokenizer(shared_data() / "stories260K/tok512.bin", 512);
    auto write_text = [&](uint64_t seed, const fs::path& path) {
      auto seqs = flextron::testing::sample_sequences(*m, 48, 256, seed);
      std::string text;
      for (int64_t i = 0; i < seqs.size(0); ++i) {
        auto row = seqs[i].narrow(0, 1, 255).contiguous();
        text += tok->decode(std::vector<int64_t>(row.data_ptr<int64_t>(),
                                                 row.data_ptr<int64_t>() + row.numel())) +
                "\n";
      }
      flextron::io::write_text_atomically(path, text);
    };
    write_text(1, dir_ / "train.txt");
    write_text(2, dir_ / "val.txt");
    flextron::io::save_model_dir(dir_ / "base", *m, tok.get());
    ft::rank_by_importance(*m, flextron::testing::sample_sequences(*m, 16, 128, 3));
    auto space = fm::default_elastic_space(m->config());
    space.ranked = true;
    flextron::io::save_model_dir(dir_ / "ranked", *m, tok.get(), &space);
    flextron::io::write_text_atomically(dir_ / "ranked" / "training.json",
                                        R"({"kind": "pretrain", "tokens": 100000})");
  }
  std::string train_args(const fs::path& out, const std::string& extra, int batch = 4) {
    return "train-elastic --model " + quote(dir_ / "ranked") + " --data " +
           quote(dir_ / "train.txt") + " --val " + quote(dir_ / "val.txt") + " --out " +
           quote(out) + " --seq-len 64 --batch " + std::to_string(batch) + " " + extra;
  }
  static void expect_close(const fs::path& a, const fs::path& b, double tolerance) {
    auto ta = flextron::io::load_model_tensors(a), tb = flextron::io::load_model_tensors(b);
    ASSERT_EQ(ta.size(), tb.size());
    double worst = 0.0;
    for (const auto& [name, t] : ta)
      worst = std::max(worst, (t - tb.at(name)).abs().max().item<double>());
    EXPECT_LT(worst, tolerance);
  }
  fs::path dir_;
};

// In float64, so that the summation order of a split batch cannot reach 1e-5 through Adam's
// sign-like first steps; the float32 path is the same code.
TEST_F(ElasticTrainingCli, TwoProcessesEqualOneProcess) {
  const auto one = dir_ / "dp1", two = dir_ / "dp2";
  fs::remove_all(one);
  fs::remove_all(two);
  auto r = run_cli(train_args(one, "--tokens 1536 --sampling sandwich --distill --dtype f64"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli("launch --nproc 2 --master-port 29561 -- " +
              train_args(two, "--tokens 1536 --sampling sandwich --distill --dtype f64"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("2 processes"), std::string::npos) << r.err;
  expect_close(one, two, 1e-5);
  // The weights did move (so the comparison means something).
  auto before = flextron::io::load_model_tensors(dir_ / "ranked");
  auto after = flextron::io::load_model_tensors(one);
  EXPECT_GT((before.at("model.layers.0.mlp.up_proj.weight") -
             after.at("model.layers.0.mlp.up_proj.weight"))
                .abs()
                .max()
                .item<double>(),
            1e-5);
  auto training = nlohmann::json::parse(flextron::testing::read_file(one / "training.json"));
  EXPECT_EQ(training["tokens"], 1536);
  EXPECT_EQ(training["base_pretraining_tokens"], 100000);
}

TEST_F(ElasticTrainingCli, ResumeEqualsUninterrupted) {
  const auto straight = dir_ / "straight", resumed = dir_ / "resumed";
  fs::remove_all(straight);
  fs::remove_all(resumed);
  auto r = run_cli(train_args(straight, "--token-fraction 0.02 --checkpoint-every 2"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli(
      train_args(resumed, "--token-fraction 0.02 --checkpoint-every 2 --stop-after-steps 4"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(resumed / "model.safetensors"));
  r = run_cli(train_args(resumed, "--token-fraction 0.02 --checkpoint-every 2 --resume"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("resuming from"), std::string::npos) << r.err;
  expect_close(straight, resumed, 1e-6);
  // 2% of 100000 tokens = 2000 -> 7 steps of 256 tokens.
  auto training = nlohmann::json::parse(flextron::testing::read_file(resumed / "training.json"));
  EXPECT_EQ(training["steps"], 7);
}

TEST_F(ElasticTrainingCli, BadInputIsAOneLineError) {
  const auto out = dir_ / "bad";
  using flextron::testing::expect_one_line_error;
  expect_one_line_error(run_cli(train_args(out, "--token-fraction 11")), "--token-fraction",
                        "outside (0, 10]");
  expect_one_line_error(run_cli(train_args(out, "--token-fraction -0.5")), "--token-fraction",
                        "is not a positive number");

  // A world size that does not divide the batch fails before joining any group.
  setenv("WORLD_SIZE", "3", 1);
  setenv("RANK", "0", 1);
  auto r = run_cli(train_args(out, "--tokens 1000"));
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  expect_one_line_error(r, "--batch", "cannot be split evenly over 3 processes");

  // A teacher with another vocabulary.
  fm::ModelConfig other;
  other.vocab_size = 256;
  fm::Transformer teacher(other);
  flextron::io::save_model_dir(dir_ / "teacher256", *teacher, nullptr);
  expect_one_line_error(
      run_cli(train_args(out, "--tokens 1000 --distill --teacher " + quote(dir_ / "teacher256"))),
      "teacher256", "teacher vocabulary has 256 tokens, the student's 512");

  // --token-fraction without the base's training.json.
  const std::string base_args = "train-elastic --model " + quote(dir_ / "base") + " --data " +
                                quote(dir_ / "train.txt") + " --out " + quote(out) +
                                " --seq-len 64 --batch 4 ";
  expect_one_line_error(run_cli(base_args + "--token-fraction 0.1"), "training.json",
                        "pretraining token count");

  // An unranked model trains, with a warning that points at `flextron rank`.
  r = run_cli(base_args + "--tokens 512 --val " + quote(dir_ / "val.txt"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("is not ranked"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("flextron rank"), std::string::npos) << r.err;
}

// After a short elastic run, the small sub-networks are much better and the full model is not
// worse than 2% (held-out text, mean NLL).
TEST_F(ElasticTrainingCli, SubNetworksImproveAndTheFullModelHolds) {
  const auto out = dir_ / "quality";
  fs::remove_all(out);
  auto r = run_cli(train_args(out, "--tokens 24576 --eval-every 1000 --distill", 8));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto before = flextron::io::load_model_dir(dir_ / "ranked");
  auto after = flextron::io::load_model_dir(out);
  auto text = flextron::testing::read_file(dir_ / "val.txt");
  auto tokens = before.tokenizer->encode(text, true);
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(tokens.size()) / 129, 24);
  auto windows = torch::tensor(tokens).narrow(0, 0, n * 129).view({n, 129});
  auto nll = [&](fm::TransformerImpl& m, const fm::Architecture& arch) {
    torch::NoGradGuard no_grad;
    auto logits = m.forward(windows.narrow(1, 0, 128), nullptr, &arch);
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                windows.narrow(1, 1, 128).reshape({-1}))
        .item<double>();
  };
  for (const auto& probe : ft::probe_architectures(before.space)) {
    const double b = nll(*before.model, probe.arch), a = nll(*after.model, probe.arch);
    std::cout << "[ held-out NLL " << probe.name << " ] before " << b << ", after " << a << "\n";
    if (probe.name == "full")
      EXPECT_LT(a, b * 1.02);
    else
      EXPECT_LT(a, b);
  }
}

}  // namespace
