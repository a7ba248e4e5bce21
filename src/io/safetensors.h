// The safetensors format (HuggingFace): an 8-byte little-endian header length N, a JSON header of
// N bytes ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
// then the raw little-endian tensor bytes, offsets relative to the end of the header.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <torch/types.h>

namespace flextron::io {

// Ordered by name so that files we write are deterministic.
using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

// Reads every tensor (F32, F16, BF16, plus I32/I64/U8/BOOL) into CPU tensors of the stored
// dtype. The file is read in chunks straight into each tensor's storage, never held twice.
// Throws flextron::Error naming the file and the problem on any malformed input (truncated
// file, header length past the end, header not JSON, unknown dtype, offsets that overlap or
// lie outside the data, shape that disagrees with the byte count).
TensorMap load_safetensors(const std::filesystem::path& path, Metadata* metadata = nullptr);

// Writes tensors (made contiguous, moved to CPU) in their dtype. Atomic: writes
// "<path>.tmp" then renames over <path>.
void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                      const Metadata& metadata = {});

}  // namespace flextron::io
