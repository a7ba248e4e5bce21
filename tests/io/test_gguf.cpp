// GGUF export and import: the round trip is lossless (tensors, function, tokenizer) for a
// uniform and a per-layer architecture; the metadata carries the keys llama.cpp reads; the
// rotary permutation makes llama.cpp's interleaved RoPE compute HF's rotate-half attention; bad
// files name what is wrong.
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "model/extract.h"
#include "model/gpt2_fixtures.h"
#include "stories260k.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using flextron::io::GgufType;

flextron::text::Tokenizer& stories_tokenizer() {
  static auto tok = flextron::text::load_llama2c_tokenizer(
      flextron::testing::shared_data() / "stories260K/tok512.bin", 512);
  return *tok;
}

torch::Tensor logits_of(flextron::model::TransformerImpl& m) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  return m.forward(torch::randint(3, 512, {2, 24}, torch::kLong));
}

TEST(Gguf, StoriesRoundTripIsLosslessWithLlamaCppMetadata) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "m.gguf", *m, &stories_tokenizer(), torch::kFloat);

  const auto file = flextron::io::read_gguf(dir / "m.gguf");
  const auto& md = file.metadata;
  for (const char* key :
       {"general.architecture", "general.alignment", "llama.context_length",
        "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
        "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model",
        "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    EXPECT_TRUE(md.count(key)) << key;
  EXPECT_EQ(md.at("general.architecture").value, "llama");
  EXPECT_EQ(md.at("llama.feed_forward_length").type, GgufType::Uint32);  // uniform: a scalar
  EXPECT_EQ(md.at("llama.attention.head_count_kv").value, 4);
  EXPECT_EQ(md.at("tokenizer.ggml.tokens").value.size(), 512u);
  EXPECT_EQ(md.at("tokenizer.ggml.tokens").value[1], "<s>");
  EXPECT_EQ(md.at("tokenizer.ggml.token_type").value[1], 3);  // control
  EXPECT_EQ(file.tensors.size(), 1u + 9u * 5u + 1u);          // tied: no output.weight
  EXPECT_EQ(file.tensors.front().name, "token_embd.weight");
  EXPECT_EQ(file.tensors.front().data.sizes(), torch::IntArrayRef({512, 64}));

  flextron::io::import_gguf_model(dir / "m.gguf", dir / "back");
  auto back = flextron::io::load_model_dir(dir / "back");
  const auto a = m->state(), b = back.model->state();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  EXPECT_TRUE(torch::equal(logits_of(*m), logits_of(*back.model)));
  EXPECT_EQ(back.model->config().rms_norm_eps, m->config().rms_norm_eps);
  ASSERT_TRUE(back.tokenizer);
  const std::string text = "Once upon a time, Lily saw a big dog.";
  EXPECT_EQ(back.tokenizer->encode(text, true), stories_tokenizer().encode(text, true));
}

TEST(Gguf, PerLayerArchitectureWritesArraysAndKeepsTheFunction) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const flextron::model::Architecture arch = {{172, 4}, {88, 2}, {128, 2}, {40, 4}, {172, 1}};
  auto sub = flextron::model::extract_subnetwork(*m, arch);
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "sub.gguf", *sub, &stories_tokenizer(), torch::kFloat);
  const auto file = flextron::io::read_gguf(dir / "sub.gguf");
  // llama.cpp reads per-layer widths under its "deci" architecture (same blocks and names).
  EXPECT_EQ(file.metadata.at("general.architecture").value, "deci");
  EXPECT_EQ(file.metadata.at("deci.feed_forward_length").value,
            nlohmann::json({172, 88, 128, 40, 172}));
  EXPECT_EQ(file.metadata.at("deci.feed_forward_length").element, GgufType::Int32);
  EXPECT_EQ(file.metadata.at("deci.attention.head_count_kv").value,
            nlohmann::json({4, 2, 2, 4, 1}));
  EXPECT_EQ(file.metadata.at("deci.attention.head_count").value, nlohmann::json({8, 4, 4, 8, 2}));
  flextron::io::import_gguf_model(dir / "sub.gguf", dir / "back");
  auto back = flextron::io::load_model_dir(dir / "back");
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  auto tokens = torch::randint(3, 512, {2, 24}, torch::kLong);
  auto elastic = m->forward(tokens, nullptr, &arch);
  EXPECT_LT((back.model->forward(tokens) - elastic).abs().max().item<double>(), 1e-5);

  // F16 matrices: the same function to half precision.
  flextron::io::save_gguf_model(dir / "sub16.gguf", *sub, &stories_tokenizer(), torch::kHalf);
  EXPECT_LT(fs::file_size(dir / "sub16.gguf"), fs::file_size(dir / "sub.gguf") * 6 / 10);
  flextron::io::import_gguf_model(dir / "sub16.gguf", dir / "back16");
  auto back16 = flextron::io::load_model_dir(dir / "back16");
  EXPECT_LT((back16.model->forward(tokens) - elastic).abs().max().item<double>(), 0.05);
}

// llama.cpp's Llama graph rotates pairs (2i, 2i+1) by angle pos * theta^(-2i/hd); HF rotates
// (i, i + hd/2). With the exported (permuted) q and k weights, the interleaved rotation must give
// the same attention scores q_p . k_s as HF's on the original weights.
TEST(Gguf, PermutedWeightsUnderInterleavedRopeGiveHfAttentionScores) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "m.gguf", *m, nullptr, torch::kFloat);
  const auto file = flextron::io::read_gguf(dir / "m.gguf");
  torch::Tensor wq, wk;
  for (const auto& t : file.tensors) {
    if (t.name == "blk.0.attn_q.weight") wq = t.data;
    if (t.name == "blk.0.attn_k.weight") wk = t.data;
  }
  ASSERT_TRUE(wq.defined() && wk.defined());
  const int64_t hd = 8, half = hd / 2;
  torch::NoGradGuard no_grad;
  torch::manual_seed(5);
  auto x = torch::randn({6, 64});  // hidden states at positions 0..5
  auto [cos, sin] = flextron::model::rope_tables(m->config());
  auto& attn = *m->layer(0).self_attn;
  // HF: rotate halves of each head.
  auto hf_rotate = [&](torch::Tensor v, int64_t heads) {
    v = v.view({6, heads, hd});
    auto x1 = v.narrow(-1, 0, half), x2 = v.narrow(-1, half, half);
    auto c = cos.narrow(0, 0, 6).unsqueeze(1), s = sin.narrow(0, 0, 6).unsqueeze(1);
    return torch::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
  };
  // llama.cpp (GGML_ROPE_TYPE_NORM): rotate adjacent pairs.
  auto ggml_rotate = [&](torch::Tensor v, int64_t heads) {
    v = v.view({6, heads, half, 2});
    auto x1 = v.select(-1, 0), x2 = v.select(-1, 1);
    auto c = cos.narrow(0, 0, 6).unsqueeze(1), s = sin.narrow(0, 0, 6).unsqueeze(1);
    return torch::stack({x1 * c - x2 * s, x2 * c + x1 * s}, -1).view({6, heads, hd});
  };
  auto hf_q = hf_rotate(torch::matmul(x, attn.q_proj->weight.t()), 8);
  auto hf_k = hf_rotate(torch::matmul(x, attn.k_proj->weight.t()), 4);
  auto gg_q = ggml_rotate(torch::matmul(x, wq.t()), 8);
  auto gg_k = ggml_rotate(torch::matmul(x, wk.t()), 4);
  // Query head h uses KV head h / 2 (group size 2): scores [heads, 6, 6].
  auto scores = [](const torch::Tensor& q, const torch::Tensor& k) {
    auto kk = k.repeat_interleave(2, 1);
    return torch::einsum("phd,shd->hps", {q, kk});
  };
  EXPECT_LT((scores(hf_q, hf_k) - scores(gg_q, gg_k)).abs().max().item<double>(), 1e-4);
  // And the permutation is not the identity (the test would be empty otherwise).
  EXPECT_FALSE(torch::allclose(wq, attn.q_proj->weight));
}

TEST(Gguf, Gpt2VocabularyTravelsWithItsMerges) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  const auto tokdir = flextron::testing::shared_data() / "tokenizers";
  auto tok =
      flextron::text::load_gpt2_tokenizer(tokdir / "gpt2_vocab.json", tokdir / "gpt2_merges.txt");
  flextron::model::ModelConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.vocab_size = 50257;
  c.bos_token_id = c.eos_token_id = 50256;
  flextron::model::Transformer m(c);
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "g.gguf", *m, tok.get(), torch::kHalf);
  const auto file = flextron::io::read_gguf(dir / "g.gguf");
  EXPECT_EQ(file.metadata.at("tokenizer.ggml.model").value, "gpt2");
  EXPECT_EQ(file.metadata.at("tokenizer.ggml.merges").value.size(), 50000u);
  flextron::io::import_gguf_model(dir / "g.gguf", dir / "back");
  auto back = flextron::io::load_model_dir(dir / "back");
  ASSERT_TRUE(back.tokenizer);
  const std::string text = "Hello world! It's a llama.cpp test, 42.";
  EXPECT_EQ(back.tokenizer->encode(text, false), tok->encode(text, false));
}

// GPT-2 as llama.cpp's "gpt2" architecture: learned positions, fused attn_qkv, biases and
// LayerNorm biases; a uniform and a per-layer sub-network round-trip with their function.
TEST(Gguf, Gpt2RoundTripIsLosslessWithLlamaCppGpt2Keys) {
  const auto dir = flextron::testing::scratch_dir();
  flextron::testing::Gpt2Shape shape;
  flextron::testing::write_gpt2_dir(dir / "hf", shape,
                                    flextron::testing::random_gpt2_tensors(shape, 2));
  auto m = flextron::io::load_model_dir(dir / "hf").model;  // float32, as GGUF stores it
  torch::NoGradGuard no_grad;
  torch::manual_seed(3);
  auto tokens = torch::randint(shape.vocab, {2, 24}, torch::kLong);
  const auto config = m->config();
  const auto space = flextron::model::default_elastic_space(config);
  const flextron::model::Architecture uniform(3, {space.mlp[0][2], 6});
  const flextron::model::Architecture per_layer = {{192, 6}, {96, 2}, {48, 4}};
  for (const auto* arch :
       {static_cast<const flextron::model::Architecture*>(nullptr), &uniform, &per_layer}) {
    auto sub = arch ? flextron::model::extract_subnetwork(*m, *arch) : m;
    const std::string name = arch == nullptr ? "full" : arch == &uniform ? "uniform" : "layers";
    const auto path = dir / (name + ".gguf");
    flextron::io::save_gguf_model(path, *sub, nullptr, torch::kFloat);
    const auto file = flextron::io::read_gguf(path);
    const auto& md = file.metadata;
    EXPECT_EQ(md.at("general.architecture").value, "gpt2");
    for (const char* key : {"gpt2.context_length", "gpt2.embedding_length", "gpt2.block_count",
                            "gpt2.feed_forward_length", "gpt2.attention.head_count",
                            "gpt2.attention.layer_norm_epsilon"})
      EXPECT_TRUE(md.count(key)) << key;
    std::map<std::string, torch::Tensor> named;
    for (const auto& t : file.tensors) named[t.name] = t.data;
    for (const char* t : {"token_embd.weight", "position_embd.weight", "output_norm.weight",
                          "output_norm.bias", "blk.0.attn_qkv.bias", "blk.2.ffn_down.bias"})
      EXPECT_TRUE(named.count(t)) << t;
    // Tied, yet output.weight is there (llama.cpp's older gpt2 loader requires it)...
    ASSERT_TRUE(named.count("output.weight"));
    EXPECT_TRUE(torch::equal(named.at("output.weight"), named.at("token_embd.weight")));
    const auto& sub_config = sub->config();
    EXPECT_EQ(named.at("blk.1.attn_qkv.weight").sizes(),
              torch::IntArrayRef({3 * sub_config.layer_kv_heads(1) * 8, 48}));
    if (arch == &per_layer) {
      EXPECT_EQ(md.at("gpt2.feed_forward_length").value, nlohmann::json({192, 96, 48}));
      EXPECT_EQ(md.at("gpt2.attention.head_count").value, nlohmann::json({6, 2, 4}));
    }
    flextron::io::import_gguf_model(path, dir / (name + "_back"));
    auto back = flextron::io::load_model_dir(dir / (name + "_back")).model;
    EXPECT_TRUE(back->config().gpt());
    EXPECT_TRUE(back->config().tie_word_embeddings);  // ...and reads back as tied
    const auto a = sub->state(), b = back->state();
    ASSERT_EQ(a.size(), b.size()) << name;
    for (const auto& [tensor, t] : a) EXPECT_TRUE(torch::equal(t, b.at(tensor))) << tensor;
    auto elastic = arch ? m->forward(tokens, nullptr, arch) : m->forward(tokens);
    EXPECT_LT((back->forward(tokens) - elastic).abs().max().item<double>(), 1e-5) << name;
  }
}

TEST(Gguf, BadFilesNameTheProblem) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "m.gguf", *m, &stories_tokenizer(), torch::kFloat);
  const auto bytes = flextron::testing::read_file(dir / "m.gguf");
  auto expect_error = [&](const std::string& content, const std::string& what) {
    std::ofstream(dir / "bad.gguf", std::ios::binary) << content;
    try {
      flextron::io::read_gguf(dir / "bad.gguf");
      ADD_FAILURE() << "accepted: " << what;
    } catch (const flextron::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.gguf"), std::string::npos) << e.what();
    }
  };
  expect_error(bytes.substr(0, bytes.size() / 2), "truncated");
  expect_error(bytes.substr(0, 100), "truncated");
  expect_error("GGML" + bytes.substr(4), "bad magic");
  std::string v9 = bytes;
  v9[4] = 9;
  expect_error(v9, "version 9");
  expect_error("", "bad magic");
  EXPECT_THROW(flextron::io::import_gguf_model(dir / "missing.gguf", dir / "x"), flextron::Error);
}

// A tensor the metadata's architecture has no place for (a stray "blk.9" in a 5-layer model, an
// unknown name) means the metadata and the tensors disagree: refused, naming the tensor.
TEST(Gguf, TensorsOutsideTheArchitectureAreRefused) {
  FLEXTRON_REQUIRE_SHARED_DATA();
  auto m = flextron::testing::load_stories260k();
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "m.gguf", *m, &stories_tokenizer(), torch::kFloat);
  auto file = flextron::io::read_gguf(dir / "m.gguf");
  file.tensors.push_back({"blk.9.ffn_up.weight", torch::zeros({172, 64}), std::nullopt});
  flextron::io::write_gguf(dir / "extra.gguf", file);
  try {
    flextron::io::import_gguf_model(dir / "extra.gguf", dir / "x");
    ADD_FAILURE() << "a tensor outside the model was accepted";
  } catch (const flextron::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("blk.9.ffn_up.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("extra.gguf"), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
}

}  // namespace
