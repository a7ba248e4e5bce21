#include "io/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "test_util.h"

namespace flextron::io {
namespace {

namespace fs = std::filesystem;

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The 8-byte little-endian length prefix, spelled out byte by byte.
std::string u64le(std::uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A file made of a literal header and raw data, with the length prefix computed from it.
std::string file_bytes(const std::string& header, const std::string& data) {
  return u64le(header.size()) + header + data;
}

std::string float_bytes(const std::vector<float>& values) {
  std::string s(values.size() * sizeof(float), '\0');
  std::memcpy(s.data(), values.data(), s.size());
  return s;
}

// Checks that `f` throws flextron::Error with a one-line message containing every word.
::testing::AssertionResult throws_error(const std::function<void()>& f,
                                        const std::vector<std::string>& words) {
  try {
    f();
  } catch (const flextron::Error& e) {
    const std::string msg = e.what();
    for (const auto& w : words) {
      if (msg.find(w) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << w << "\"";
    }
    if (msg.find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "message is not one line: \"" << msg << "\"";
    return ::testing::AssertionSuccess() << msg;
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure()
           << "threw something other than flextron::Error: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

::testing::AssertionResult load_fails(const fs::path& path, std::vector<std::string> words) {
  words.insert(words.begin(), path.string());
  return throws_error([&] { load_safetensors(path); }, words);
}

// Same dtype, shape and bytes (torch::equal alone would miss NaN payloads and -0.0).
void expect_bit_identical(const torch::Tensor& expected, const torch::Tensor& actual,
                          const std::string& name) {
  SCOPED_TRACE(name);
  ASSERT_TRUE(actual.defined());
  EXPECT_EQ(actual.scalar_type(), expected.scalar_type());
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_TRUE(actual.device().is_cpu());
  EXPECT_TRUE(actual.is_contiguous());
  auto e = expected.contiguous();
  const auto nbytes = static_cast<std::size_t>(e.numel() * e.element_size());
  if (nbytes > 0) {
    EXPECT_EQ(std::memcmp(e.data_ptr(), actual.data_ptr(), nbytes), 0);
  }
  const bool has_nan = e.is_floating_point() && e.isnan().any().item<bool>();
  if (!has_nan) {
    EXPECT_TRUE(torch::equal(e, actual));
  }
}

TEST(Safetensors, RoundTripIsBitIdentical) {
  auto path = flextron::testing::scratch_dir() / "model.safetensors";
  torch::manual_seed(0);
  auto nan_float = torch::randn({4});
  nan_float[1] = std::numeric_limits<float>::quiet_NaN();
  nan_float[2] = -0.0f;
  TensorMap tensors{
      {"f32", torch::randn({3, 4})},
      {"f16", torch::randn({5}).to(torch::kHalf)},
      {"bf16", torch::randn({2, 3}).to(torch::kBFloat16)},
      {"i64", torch::arange(-6, 6, torch::kInt64).reshape({3, 4}) * int64_t{1000000000000}},
      {"i32", torch::arange(-3, 3, torch::kInt32)},
      {"u8", torch::arange(250, 256, torch::kInt64).to(torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"scalar", torch::tensor(3.5f)},
      {"scalar_i64", torch::tensor(int64_t{-7})},
      {"empty", torch::empty({0})},
      {"empty_2d", torch::empty({2, 0, 3}, torch::kInt64)},
      {"nan", nan_float},
      {"transposed", torch::randn({3, 2}).t()},  // Not contiguous: the writer must fix that.
  };
  ASSERT_EQ(tensors.at("scalar").dim(), 0);
  save_safetensors(path, tensors);
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  auto loaded = load_safetensors(path);
  ASSERT_EQ(loaded.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    ASSERT_EQ(loaded.count(name), 1u) << name;
    expect_bit_identical(tensor, loaded.at(name), name);
  }
  EXPECT_EQ(loaded.at("scalar").dim(), 0);

  // Saving what we loaded reproduces the file exactly (deterministic layout).
  auto again = path.parent_path() / "again.safetensors";
  save_safetensors(again, loaded);
  EXPECT_EQ(read_bytes(again), read_bytes(path));
}

TEST(Safetensors, EmptyTensorMapRoundTrips) {
  auto path = flextron::testing::scratch_dir() / "none.safetensors";
  save_safetensors(path, {});
  Metadata meta{{"stale", "value"}};
  EXPECT_TRUE(load_safetensors(path, &meta).empty());
  EXPECT_TRUE(meta.empty());
}

TEST(Safetensors, MetadataRoundTrips) {
  auto path = flextron::testing::scratch_dir() / "meta.safetensors";
  Metadata metadata{
      {"format", "pt"}, {"note", "h\xc3\xa9llo \"quoted\"\nsecond line"}, {"empty", ""}};
  save_safetensors(path, {{"w", torch::ones({2})}}, metadata);
  Metadata loaded_meta{{"stale", "should be replaced"}};
  auto loaded = load_safetensors(path, &loaded_meta);
  EXPECT_EQ(loaded_meta, metadata);
  EXPECT_TRUE(torch::equal(loaded.at("w"), torch::ones({2})));
}

TEST(Safetensors, ReadsHandBuiltFile) {
  auto path = flextron::testing::scratch_dir() / "hand.safetensors";
  // Written the way another tool might: entries out of order, fields reordered, metadata last,
  // no padding, and "b" stored before "a" in the data section.
  const std::string header = R"({"a":{"shape":[2],"dtype":"F32","data_offsets":[8,16]},)"
                             R"("b":{"data_offsets":[0,8],"dtype":"F32","shape":[1,2]},)"
                             R"("c":{"dtype":"I64","shape":[],"data_offsets":[16,24]},)"
                             R"("__metadata__":{"format":"pt"}})";
  const std::string data = float_bytes({0.1f, -0.0f}) + float_bytes({1.5f, -2.0f}) +
                           std::string("\xfe\xff\xff\xff\xff\xff\xff\xff", 8);  // -2
  write_bytes(path, file_bytes(header, data));

  Metadata meta;
  auto t = load_safetensors(path, &meta);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(meta, (Metadata{{"format", "pt"}}));

  const auto& a = t.at("a");
  ASSERT_EQ(a.scalar_type(), torch::kFloat32);
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(a[0].item<float>(), 1.5f);
  EXPECT_EQ(a[1].item<float>(), -2.0f);

  const auto& b = t.at("b");
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(b[0][0].item<float>(), 0.1f);
  EXPECT_EQ(b[0][1].item<float>(), 0.0f);
  EXPECT_TRUE(std::signbit(b[0][1].item<float>()));

  const auto& c = t.at("c");
  ASSERT_EQ(c.scalar_type(), torch::kInt64);
  EXPECT_EQ(c.dim(), 0);
  EXPECT_EQ(c.item<int64_t>(), -2);
}

TEST(Safetensors, WriterMatchesHandBuiltBytes) {
  auto path = flextron::testing::scratch_dir() / "out.safetensors";
  save_safetensors(path, {{"w", torch::tensor({1.0f, -2.5f})}}, {{"format", "pt"}});

  // 85 bytes of JSON plus 3 spaces of padding = 88 = 0x58, then 1.0f and -2.5f little-endian.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"
      "   ";
  ASSERT_EQ(header.size(), 88u);
  const std::string expected = std::string("\x58\0\0\0\0\0\0\0", 8) + header +
                               std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8);
  EXPECT_EQ(read_bytes(path), expected);
}

TEST(Safetensors, WriterLaysOutTensorsInNameOrderContiguously) {
  auto path = flextron::testing::scratch_dir() / "order.safetensors";
  save_safetensors(path, {{"z", torch::full({1}, 7, torch::kInt32)},
                          {"a", torch::ones({1}, torch::kHalf)},
                          {"m", torch::empty({0})}});
  const std::string header = R"({"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                             R"("m":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                             R"("z":{"dtype":"I32","shape":[1],"data_offsets":[2,6]}})";
  const std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  const std::string expected = u64le(padded.size()) + padded +
                               std::string("\x00\x3c", 2) +         // 1.0 as F16
                               std::string("\x07\x00\x00\x00", 4);  // 7 as I32
  EXPECT_EQ(read_bytes(path), expected);
}

TEST(Safetensors, TruncatedFileFails) {
  auto dir = flextron::testing::scratch_dir();
  auto path = dir / "cut.safetensors";
  save_safetensors(path, {{"a", torch::ones({4})}, {"b", torch::ones({8})}});
  const auto bytes = read_bytes(path);
  write_bytes(path, bytes.substr(0, bytes.size() - 3));
  EXPECT_TRUE(load_fails(
      path, {"truncated", "'b'", std::to_string(bytes.size()), std::to_string(bytes.size() - 3)}));
}

TEST(Safetensors, HeaderLengthLargerThanFileFails) {
  auto path = flextron::testing::scratch_dir() / "long.safetensors";
  write_bytes(path, u64le(1000) + "{}");
  EXPECT_TRUE(load_fails(path, {"header length", "1000", "10 bytes"}));
  // A length near 2^64 must not wrap around in the size arithmetic.
  write_bytes(path, u64le(std::numeric_limits<std::uint64_t>::max()) + "{}");
  EXPECT_TRUE(load_fails(path, {"header length"}));
}

TEST(Safetensors, HeaderNotJsonFails) {
  auto path = flextron::testing::scratch_dir() / "notjson.safetensors";
  write_bytes(path, file_bytes("not json", ""));
  EXPECT_TRUE(load_fails(path, {"JSON", "parse error"}));
  write_bytes(path, file_bytes("{\"a\":\n", ""));
  EXPECT_TRUE(load_fails(path, {"JSON"}));
}

TEST(Safetensors, HeaderNotObjectFails) {
  auto path = flextron::testing::scratch_dir() / "array.safetensors";
  write_bytes(path, file_bytes("[1, 2]", ""));
  EXPECT_TRUE(load_fails(path, {"not a JSON object"}));
}

TEST(Safetensors, ShapeDisagreeingWithOffsetsFails) {
  auto path = flextron::testing::scratch_dir() / "shape.safetensors";
  write_bytes(path, file_bytes(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                               float_bytes({1, 2, 3})));
  EXPECT_TRUE(load_fails(path, {"'x'", "data_offsets", "12"}));
  // A shape whose byte count overflows 64 bits must not wrap around to match.
  write_bytes(path, file_bytes(R"({"x":{"dtype":"F32","shape":[4611686018427387904],)"
                               R"("data_offsets":[0,0]}})",
                               ""));
  EXPECT_TRUE(load_fails(path, {"'x'", "data_offsets"}));
}

TEST(Safetensors, UnknownDtypeFails) {
  auto path = flextron::testing::scratch_dir() / "dtype.safetensors";
  write_bytes(path, file_bytes(R"({"x":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "a"));
  EXPECT_TRUE(load_fails(path, {"'x'", "unknown dtype", "F8"}));
}

TEST(Safetensors, EmptyFileFails) {
  auto path = flextron::testing::scratch_dir() / "empty.safetensors";
  write_bytes(path, "");
  EXPECT_TRUE(load_fails(path, {"too short"}));
  write_bytes(path, std::string("\x02\0\0\0", 4));
  EXPECT_TRUE(load_fails(path, {"too short"}));
}

TEST(Safetensors, MissingFileOrDirectoryFails) {
  auto dir = flextron::testing::scratch_dir();
  EXPECT_TRUE(load_fails(dir / "absent.safetensors", {"no such file"}));
  EXPECT_TRUE(load_fails(dir, {"directory"}));
}

TEST(Safetensors, MalformedEntriesFail) {
  auto path = flextron::testing::scratch_dir() / "entries.safetensors";
  const std::string data = float_bytes({1, 2, 3, 4});
  struct Case {
    std::string header;
    std::vector<std::string> words;
  };
  const std::vector<Case> cases = {
      {R"({"x":{"shape":[1],"data_offsets":[0,4]}})", {"'x'", "missing \"dtype\""}},
      {R"({"x":{"dtype":"F32","data_offsets":[0,4]}})", {"'x'", "missing \"shape\""}},
      {R"({"x":{"dtype":"F32","shape":[1]}})", {"'x'", "missing \"data_offsets\""}},
      {R"({"x":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", {"'x'", "\"dtype\""}},
      {R"({"x":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", {"'x'", "\"shape\""}},
      {R"({"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", {"'x'", "\"shape\""}},
      {R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", {"'x'", "negative"}},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", {"'x'", "data_offsets"}},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", {"'x'", "negative"}},
      {R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", {"'x'", "data_offsets"}},
      {R"({"x":[1]})", {"'x'", "not a JSON object"}},
      {R"({"__metadata__":[]})", {"__metadata__"}},
      {R"({"__metadata__":{"k":1}})", {"__metadata__", "'k'", "not a string"}},
      {R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       {"'x'", "'y'", "overlap"}},
      {R"({"x":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})",
       {"'x'", "truncated", "should be"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.header);
    write_bytes(path, file_bytes(c.header, data));
    EXPECT_TRUE(load_fails(path, c.words));
  }
}

TEST(Safetensors, EmptyTensorsMayShareOffsets) {
  auto path = flextron::testing::scratch_dir() / "shared.safetensors";
  write_bytes(path, file_bytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                               float_bytes({1, 2})));
  auto t = load_safetensors(path);
  EXPECT_EQ(t.at("e").numel(), 0);
  EXPECT_TRUE(torch::equal(t.at("x"), torch::tensor({1.0f, 2.0f})));
}

TEST(Safetensors, WriterRejectsUnsupportedTensors) {
  auto path = flextron::testing::scratch_dir() / "bad.safetensors";
  EXPECT_TRUE(throws_error(
      [&] {
        save_safetensors(path, {{"cplx", torch::zeros({2}, torch::kComplexFloat)}});
      },
      {path.string(), "'cplx'", "dtype"}));
  EXPECT_TRUE(throws_error(
      [&] {
        save_safetensors(path, {{"undef", torch::Tensor()}});
      },
      {path.string(), "'undef'"}));
  EXPECT_TRUE(throws_error(
      [&] {
        save_safetensors(path, {{"__metadata__", torch::ones({1})}});
      },
      {path.string(), "__metadata__"}));
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
}

}  // namespace
}  // namespace flextron::io
