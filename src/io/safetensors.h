// The safetensors format (HuggingFace): an 8-byte little-endian header length N, a JSON header of
// N bytes ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
// then the raw little-endian tensor bytes, offsets relative to the end of the header.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "core/quant_blocks.h"

namespace flextron::io {

// Ordered by name so that files we write are deterministic.
using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

// Reads every tensor (F32, F16, BF16, plus I32/I64/U8/BOOL) into CPU tensors of the stored
// dtype. Block-quantized tensors (our own dtype tags "Q8_0" and "Q4_0": ggml's blocks of 32
// along the last dimension, a last partial block zero-padded, so a [rows, cols] tensor holds
// rows * ceil(cols / 32) blocks; see core/quant_blocks.h) are dequantized to F32. The file is read
// in chunks straight into each tensor's storage, never held twice. Throws flextron::Error naming
// the file and the problem on any malformed input (truncated file, header length past the end,
// header not JSON, unknown dtype, shape that disagrees with the byte count, and tensors that do
// not tile the data section exactly: as the reference implementation requires, each begins
// where the one before it ends and the last ends at the end of the file, so a gap, an overlap
// or trailing bytes are errors; empty tensors occupy nothing and may sit anywhere).
TensorMap load_safetensors(const std::filesystem::path& path, Metadata* metadata = nullptr);
// The same from a file's bytes in memory; errors name `where`.
TensorMap parse_safetensors(const std::string& bytes, const std::string& where,
                            Metadata* metadata = nullptr);

// A block-quantized tensor to write: `bytes` holds its blocks in `type` (Q8_0 or Q4_0) row
// after row, for the logical `shape`.
struct BlockTensor {
  quant::GgmlType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};
using BlockTensorMap = std::map<std::string, BlockTensor>;

// Writes tensors (made contiguous, moved to CPU) in their dtype, and `blocks` under their block
// dtype tags, all in name order. Atomic: writes "<path>.tmp" then renames over <path>.
void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                      const Metadata& metadata = {}, const BlockTensorMap& blocks = {});

}  // namespace flextron::io
