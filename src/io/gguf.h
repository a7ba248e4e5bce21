// GGUF v3, llama.cpp's model file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
//   "GGUF" | u32 version | u64 tensor count | u64 metadata count
//   metadata: (string key, u32 type, value)...      strings are u64 length + bytes
//   tensor infos: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)...
//   padding to general.alignment (32), then the tensor data, each at its aligned offset.
// ne[0] is the fastest-varying dimension: a row-major torch [out, in] matrix has ne = {in, out}.
// Only F32 and F16 tensors are read and written here.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

namespace flextron::io {

enum class GgufType : uint32_t {
  Uint8 = 0,
  Int8 = 1,
  Uint16 = 2,
  Int16 = 3,
  Uint32 = 4,
  Int32 = 5,
  Float32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  Uint64 = 10,
  Int64 = 11,
  Float64 = 12
};

// One metadata value: its GGUF type (for arrays, also the element type) and the value as JSON.
struct GgufValue {
  GgufType type = GgufType::String;
  GgufType element = GgufType::String;  // arrays only
  nlohmann::json value;
};

using GgufMetadata = std::map<std::string, GgufValue>;

struct GgufTensor {
  std::string name;
  torch::Tensor data;  // torch layout ([out, in] for matrices), float32 or float16
};

struct GgufFile {
  GgufMetadata metadata;
  std::vector<GgufTensor> tensors;  // in file order
};

// Helpers for building metadata.
GgufValue gguf_string(const std::string& s);
GgufValue gguf_u32(uint32_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_array(GgufType element, nlohmann::json values);

// Writes `file`, tensors as stored (float32 -> F32, float16 -> F16; others are an error),
// atomically (write then rename).
void write_gguf(const std::filesystem::path& path, const GgufFile& file);

// Reads a GGUF v2/v3 file. Throws flextron::Error naming the file and what is wrong (bad
// magic, unsupported version or tensor type, truncation, offsets outside the file).
GgufFile read_gguf(const std::filesystem::path& path);

}  // namespace flextron::io
