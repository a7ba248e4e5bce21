// GGUF v3, llama.cpp's model file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):
//   "GGUF" | u32 version | u64 tensor count | u64 metadata count
//   metadata: (string key, u32 type, value)...      strings are u64 length + bytes
//   tensor infos: (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)...
//   padding to general.alignment (32), then the tensor data, each at its aligned offset.
// ne[0] is the fastest-varying dimension: a row-major torch [out, in] matrix has ne = {in, out}.
// Read: F32, F16, BF16 and the quantized types of core/quant_blocks.h (Q4_0 ... Q8_K),
// dequantized to float32. Written: F32, F16, BF16, Q8_0, Q4_0.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "core/quant_blocks.h"

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
  // Torch layout ([out, in] for matrices). Read: float16 (F16), bfloat16 (BF16), else float32
  // (F32 and every quantized type, dequantized).
  torch::Tensor data;
  // Read: the file's ggml type. Write: how to store `data` (F32, F16, BF16, or Q8_0 / Q4_0,
  // quantized with llama.cpp's reference rounding, which need rows of a multiple of 32); unset:
  // by data's dtype (float32 F32, float16 F16, bfloat16 BF16).
  std::optional<quant::GgmlType> type;
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

// Writes `file` (tensors as GgufTensor::type says), atomically (write then rename).
void write_gguf(const std::filesystem::path& path, const GgufFile& file);

// Reads a GGUF v2/v3 file. Every count, length, shape and offset is checked before anything is
// allocated from it: throws a one-line flextron::Error naming the file and what is wrong (bad
// magic or version, truncation, counts or lengths that cannot fit in the file, n_dims outside
// 1..4, a zero or overflowing shape, an unknown or unread ggml type, rows that are not whole
// blocks, general.alignment not a power of two, offsets unaligned, outside the file or
// overlapping, duplicate keys or tensor names).
GgufFile read_gguf(const std::filesystem::path& path);
// The same from the file's bytes in memory; errors name `where`.
GgufFile parse_gguf(const std::string& bytes, const std::string& where);

}  // namespace flextron::io
