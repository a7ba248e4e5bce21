// Quantized model directories (flextron quantize: matrices as Q8_0 / Q4_0 blocks in
// model.safetensors) and quantized GGUF files: what they store is the blocks of llama.cpp's
// formulas, they load as those blocks dequantized, and quantizing that again is bit-exact, so
// the fast runtime runs exactly the model that was written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_model.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "pipeline/quantize.h"
#include "runtime/fast_decoder.h"
#include "runtime/quantized_reference.h"
#include "test_util.h"

namespace fs = std::filesystem;
namespace qk = flextron::runtime::qk;
using flextron::quant::GgmlType;

namespace {

flextron::model::Transformer small_model(uint64_t seed) {
  flextron::model::ModelConfig c;
  c.hidden_size = 80;  // not a multiple of 32: a partial block in every row
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.vocab_size = 70;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = false;
  torch::manual_seed(seed);
  flextron::model::Transformer m(c);
  m->eval();
  return m;
}

std::vector<float> prefill_logits(flextron::model::TransformerImpl& m, qk::WeightFormat f) {
  flextron::runtime::EngineOptions o{1, 16};
  o.format = f;
  flextron::runtime::FastDecoder engine(m, o);
  std::vector<int64_t> tokens{1, 5, 9, 33, 2, 60, 14};
  auto cache = engine.make_cache(16);
  const int64_t vocab = m.config().vocab_size;
  std::vector<float> all(tokens.size() * static_cast<size_t>(vocab));
  engine.prefill(tokens, cache, {}, all.data());
  return all;
}

}  // namespace

// A quantized directory stores every matrix as blocks (a quarter / an eighth of the fp32 bytes,
// norms in F32), loads as exactly the quantize -> dequantize image of the source, names its
// format, and the fast runtime in that format computes bit-identical logits from it and from
// the source (its second quantization reproduces the stored blocks).
TEST(QuantizedDir, StoresBlocksAndLoadsTheirExactImage) {
  auto m = small_model(3);
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_model_dir(dir / "f32", *m, nullptr);
  for (auto f : {qk::WeightFormat::Q8_0, qk::WeightFormat::Q4_0}) {
    const std::string name = qk::format_name(f);
    const auto out = dir / name;
    const auto r = flextron::pipeline::quantize_model_dir(dir / "f32", out, f);
    EXPECT_LT(r.bytes_after, r.bytes_before / (f == qk::WeightFormat::Q8_0 ? 3 : 5)) << name;
    flextron::io::Metadata meta;
    const auto raw = flextron::io::load_safetensors(out / "model.safetensors", &meta);
    EXPECT_EQ(meta.at(flextron::io::kStoredWeightsKey), name);
    auto loaded = flextron::io::load_model_dir(out);
    EXPECT_EQ(loaded.stored_weights, name);
    auto reference = flextron::testing::dequantized_copy(*m, f);
    const auto got = loaded.model->state(), want = reference->state();
    for (const auto& [tensor, t] : got)
      EXPECT_TRUE(torch::equal(t, want.at(tensor))) << name << " " << tensor;
    EXPECT_EQ(prefill_logits(*loaded.model, f), prefill_logits(*m, f)) << name;
    // Quantizing the quantized directory again writes the same bytes.
    flextron::pipeline::quantize_model_dir(out, dir / (name + "_again"), f);
    std::ifstream a(out / "model.safetensors", std::ios::binary),
        b(dir / (name + "_again") / "model.safetensors", std::ios::binary);
    const std::string bytes_a((std::istreambuf_iterator<char>(a)), {}),
        bytes_b((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(bytes_a, bytes_b) << name;
  }
  EXPECT_THROW(
      flextron::pipeline::quantize_model_dir(dir / "f32", dir / "x", qk::WeightFormat::F32),
      flextron::Error);
}

// A Q4_0 GGUF we export imports back bit-exact: exporting the imported model as Q4_0 again
// writes the same blocks.
TEST(QuantizedDir, Q4_0GgufRoundTripIsBitExact) {
  // (GGUF rows must be whole blocks: a shape whose rows are multiples of 32.)
  flextron::model::ModelConfig c = small_model(4)->config();
  c.hidden_size = 64;
  c.intermediate_size = 128;
  torch::manual_seed(5);
  flextron::model::Transformer base(c);
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_gguf_model(dir / "a.gguf", *base, nullptr, GgmlType::Q4_0);
  flextron::io::import_gguf_model(dir / "a.gguf", dir / "imported");
  auto back = flextron::io::load_model_dir(dir / "imported").model;
  flextron::io::save_gguf_model(dir / "b.gguf", *back, nullptr, GgmlType::Q4_0);
  const auto a = flextron::io::read_gguf(dir / "a.gguf"),
             b = flextron::io::read_gguf(dir / "b.gguf");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    EXPECT_EQ(a.tensors[i].name, b.tensors[i].name);
    EXPECT_EQ(*a.tensors[i].type, *b.tensors[i].type);
    EXPECT_TRUE(torch::equal(a.tensors[i].data, b.tensors[i].data)) << a.tensors[i].name;
  }
  // The imported weights are the blocks' exact image of the original.
  auto reference = flextron::testing::dequantized_copy(*base, qk::WeightFormat::Q4_0);
  for (const auto& [tensor, t] : back->state())
    EXPECT_TRUE(torch::equal(t, reference->state().at(tensor))) << tensor;
}

// Block dtypes in safetensors are checked like any other: a byte count that disagrees with the
// shape, or an unknown stored format, is an error naming the tensor or the key.
TEST(QuantizedDir, MalformedBlockTensorsAreNamedErrors) {
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::BlockTensor b{GgmlType::Q8_0, {2, 40}, std::vector<uint8_t>(2 * 2 * 34, 0)};
  flextron::io::save_safetensors(dir / "ok.safetensors", {}, {}, {{"w", b}});
  const auto back = flextron::io::load_safetensors(dir / "ok.safetensors");
  EXPECT_EQ(back.at("w").sizes(), (std::vector<int64_t>{2, 40}));
  b.bytes.pop_back();
  try {
    flextron::io::save_safetensors(dir / "bad.safetensors", {}, {}, {{"w", b}});
    FAIL() << "a short block tensor was written";
  } catch (const flextron::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  // A header claiming Q4_0 for bytes of another size.
  std::string header = R"({"w":{"dtype":"Q4_0","shape":[1,64],"data_offsets":[0,30]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::ofstream out(dir / "lie.safetensors", std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << std::string(30, '\0');
  out.close();
  try {
    flextron::io::load_safetensors(dir / "lie.safetensors");
    FAIL() << "accepted";
  } catch (const flextron::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("Q4_0"), std::string::npos) << what;
    EXPECT_NE(what.find("36"), std::string::npos) << what;  // 2 blocks of 18 bytes
  }
}

// The CLI: quantize writes the directory and says what it wrote; an unknown type is refused by
// name.
TEST(QuantizedDir, CliQuantizeWritesTheFormat) {
  auto m = small_model(6);
  const auto dir = flextron::testing::scratch_dir();
  flextron::io::save_model_dir(dir / "f32", *m, nullptr);
  auto q = flextron::testing::run_cli("quantize --model '" + (dir / "f32").string() +
                                      "' --type q4_0 --out '" + (dir / "q4").string() + "'");
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_NE(q.out.find("q4_0"), std::string::npos) << q.out;
  auto bad = flextron::testing::run_cli("quantize --model '" + (dir / "f32").string() +
                                        "' --type q5_k --out '" + (dir / "x").string() + "'");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("q5_k"), std::string::npos) << bad.err;
}
