#include "io/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"

// Tensor bytes are copied verbatim between file and memory, and safetensors is little-endian.
// A big-endian host would need a byte swap per element; we do not support one.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");
#endif

namespace flextron::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr std::uint64_t kLengthBytes = 8;
// Reads go straight into tensor storage in pieces of this size, so no extra buffer is needed
// and a single huge read never has to be issued.
constexpr std::uint64_t kReadChunk = std::uint64_t{64} << 20;

// size: bytes per element, or per block of `block` elements along the last dimension for the
// block-quantized tags (read as F32).
struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  std::uint64_t size;
  std::int64_t block = 1;
  quant::GgmlType ggml = quant::GgmlType::F32;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},
    {"F32", torch::kFloat32, 4},
    {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2},
    {"I64", torch::kInt64, 8},
    {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},
    {"I8", torch::kInt8, 1},
    {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
    {"Q8_0", torch::kFloat32, sizeof(quant::BlockQ8_0), quant::kQK, quant::GgmlType::Q8_0},
    {"Q4_0", torch::kFloat32, sizeof(quant::BlockQ4_0), quant::kQK, quant::GgmlType::Q4_0},
};

const DtypeInfo* block_dtype(quant::GgmlType type) {
  for (const auto& d : kDtypes)
    if (d.block > 1 && d.ggml == type) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo* dtype_by_type(torch::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type && d.block == 1) return &d;
  return nullptr;
}

// One line, bounded length: parser messages may quote raw header bytes.
std::string one_line(const std::string& text, std::size_t max_len = 160) {
  std::string out;
  for (char c : text) {
    if (out.size() >= max_len) {
      out += "...";
      break;
    }
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  }
  return out;
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin;
  std::uint64_t end;
};

// Checks one header entry against the schema and the data section size; fails naming it.
Entry parse_entry(const std::string& where, const std::string& name, const Json& value,
                  std::uint64_t data_size, std::uint64_t file_size) {
  const std::string who = "tensor '" + one_line(name, 80) + "'";
  auto bad = [&](const std::string& what) {
    fail(where, who + ": " + what);
  };
  if (!value.is_object()) bad("header entry is not a JSON object");

  Entry e{name, nullptr, {}, 0, 0};
  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) bad("missing \"dtype\"");
  if (!dtype_it->is_string()) bad("\"dtype\" is not a string");
  e.dtype = dtype_by_name(dtype_it->get<std::string>());
  if (e.dtype == nullptr)
    bad("unknown dtype \"" + one_line(dtype_it->get<std::string>(), 40) + "\"");

  auto shape_it = value.find("shape");
  if (shape_it == value.end()) bad("missing \"shape\"");
  if (!shape_it->is_array()) bad("\"shape\" is not an array");
  // numel * element size must fit the file, so overflow in the product is itself an error.
  std::uint64_t nbytes = e.dtype->size;
  bool overflow = false;
  bool has_zero = false;
  if (e.dtype->block > 1 && shape_it->empty()) bad("a block-quantized tensor needs a dimension");
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const auto& dim = (*shape_it)[i];
    if (!dim.is_number_integer()) bad("\"shape\" holds a non-integer");
    if (!dim.is_number_unsigned()) bad("\"shape\" has a negative dimension");
    const auto d = dim.get<std::uint64_t>();
    if (d > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      bad("\"shape\" dimension too large");
    e.shape.push_back(static_cast<std::int64_t>(d));
    // Blocks run along the last dimension: it counts in blocks.
    const std::uint64_t units = e.dtype->block > 1 && i + 1 == shape_it->size()
                                    ? (d + e.dtype->block - 1) / e.dtype->block
                                    : d;
    if (d == 0) {
      has_zero = true;
    } else if (nbytes > std::numeric_limits<std::uint64_t>::max() / units) {
      overflow = true;
    }
    nbytes *= units;
  }
  // A zero dimension makes the tensor empty whatever the other dimensions are.
  if (has_zero) overflow = false;

  auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) bad("missing \"data_offsets\"");
  if (!offsets_it->is_array() || offsets_it->size() != 2)
    bad("\"data_offsets\" is not an array of two integers");
  for (const auto& off : *offsets_it) {
    if (!off.is_number_integer()) bad("\"data_offsets\" holds a non-integer");
    if (!off.is_number_unsigned()) bad("\"data_offsets\" holds a negative offset");
  }
  e.begin = (*offsets_it)[0].get<std::uint64_t>();
  e.end = (*offsets_it)[1].get<std::uint64_t>();
  if (e.end < e.begin)
    bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
        "] end before they begin");
  if (overflow || e.end - e.begin != nbytes)
    bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] span " +
        std::to_string(e.end - e.begin) + " bytes but shape " + shape_string(e.shape) + " of " +
        e.dtype->name + " needs " + (overflow ? "more than 2^64" : std::to_string(nbytes)) +
        " bytes");
  if (e.end > data_size)
    bad("file truncated: data ends at byte " + std::to_string(e.end) +
        " of the data section, so the file should be at least " +
        std::to_string(file_size - data_size + e.end) + " bytes but it is " +
        std::to_string(file_size));
  return e;
}

// Reads exactly `n` bytes at the stream's position into `dst`, in chunks.
void read_exact(std::istream& in, char* dst, std::uint64_t n, const std::string& where,
                const std::string& what) {
  while (n > 0) {
    const auto chunk = std::min(n, kReadChunk);
    in.read(dst, static_cast<std::streamsize>(chunk));
    if (static_cast<std::uint64_t>(in.gcount()) != chunk)
      fail(where, "read failed for " + what + " (file changed or unreadable?)");
    dst += chunk;
    n -= chunk;
  }
}

void put_u64_le(std::ostream& out, std::uint64_t v) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.write(bytes, 8);
}

}  // namespace

namespace {

TensorMap read_safetensors(std::istream& in, std::uint64_t file_size, const std::string& where,
                           Metadata* metadata) {
  if (file_size < kLengthBytes)
    fail(where, "file too short (" + std::to_string(file_size) +
                    " bytes) to hold the 8-byte header length");

  unsigned char len_bytes[kLengthBytes];
  read_exact(in, reinterpret_cast<char*>(len_bytes), kLengthBytes, where, "the header length");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - kLengthBytes)
    fail(where, "header length " + std::to_string(header_len) + " is larger than the file (" +
                    std::to_string(file_size) + " bytes)");

  std::string header_text(header_len, '\0');
  read_exact(in, header_text.data(), header_len, where, "the header");
  Json header;
  try {
    header = Json::parse(header_text);
  } catch (const Json::exception& e) {
    fail(where, "header is not valid JSON (" + one_line(e.what()) + ")");
  }
  header_text = std::string();  // The header can be large; free it before the tensors.
  if (!header.is_object()) fail(where, "header is not a JSON object");

  const std::uint64_t data_start = kLengthBytes + header_len;
  const std::uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  Metadata meta;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(where, "\"__metadata__\" is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          fail(where, "\"__metadata__\" value for '" + one_line(key, 80) + "' is not a string");
        meta[key] = text.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(where, name, value, data_size, file_size));
  }

  // Sorted by position: overlap shows up between neighbours, and reads go forward only.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  // As the reference implementation validates: the tensors, in offset order, tile the data
  // section exactly, each starting where the previous one ends, the last ending at the end of
  // the file. A gap, an overlap or trailing bytes mean the header and the data disagree (a
  // header length off by one shifts every tensor by a byte and leaves one over).
  // Empty tensors occupy no bytes: they may sit at any offset inside the data.
  std::uint64_t covered = 0;
  const Entry* prev = nullptr;
  for (const auto& e : entries) {
    if (e.begin == e.end) continue;
    if (e.begin < covered && prev != nullptr)
      fail(where, "tensors '" + one_line(prev->name, 80) + "' and '" + one_line(e.name, 80) +
                      "' have overlapping data_offsets");
    if (e.begin > covered)
      fail(where, "bytes " + std::to_string(covered) + " to " + std::to_string(e.begin) +
                      " of the data section belong to no tensor (before '" + one_line(e.name, 80) +
                      "')");
    covered = e.end;
    prev = &e;
  }
  if (covered != data_size)
    fail(where, "the tensors cover " + std::to_string(covered) + " of the data section's " +
                    std::to_string(data_size) + " bytes (" + std::to_string(data_size - covered) +
                    " bytes after the last tensor: wrong header length or trailing data)");

  TensorMap tensors;
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    const std::uint64_t nbytes = e.end - e.begin;
    if (e.dtype->block > 1) {
      // Block-quantized: read the blocks, dequantize row by row (a padded last block through a
      // scratch row).
      std::vector<uint8_t> raw(nbytes);
      if (nbytes > 0) {
        in.seekg(static_cast<std::streamoff>(data_start + e.begin));
        if (!in) fail(where, "cannot seek to tensor '" + one_line(e.name, 80) + "'");
        read_exact(in, reinterpret_cast<char*>(raw.data()), nbytes, where,
                   "tensor '" + one_line(e.name, 80) + "'");
      }
      const int64_t cols = e.shape.back(), rows = cols == 0 ? 0 : t.numel() / cols;
      const int64_t nb = (cols + e.dtype->block - 1) / e.dtype->block;
      std::vector<float> row(static_cast<size_t>(nb * e.dtype->block));
      float* out = t.data_ptr<float>();
      for (int64_t r = 0; r < rows; ++r) {
        quant::dequantize(e.dtype->ggml, raw.data() + r * nb * e.dtype->size, row.data(),
                          nb * e.dtype->block);
        std::copy(row.begin(), row.begin() + cols, out + r * cols);
      }
      tensors.emplace(e.name, std::move(t));
      continue;
    }
    if (nbytes > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + e.begin));
      if (!in) fail(where, "cannot seek to tensor '" + one_line(e.name, 80) + "'");
      read_exact(in, static_cast<char*>(t.data_ptr()), nbytes, where,
                 "tensor '" + one_line(e.name, 80) + "'");
    }
    tensors.emplace(e.name, std::move(t));
  }
  if (metadata != nullptr) *metadata = std::move(meta);
  return tensors;
}

}  // namespace

TensorMap load_safetensors(const std::filesystem::path& path, Metadata* metadata) {
  const std::string where = path.string();
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (status.type() == fs::file_type::none) fail(where, "cannot access: " + ec.message());
  if (!fs::exists(status)) fail(where, "no such file");
  if (fs::is_directory(status)) fail(where, "is a directory, not a safetensors file");
  if (!fs::is_regular_file(status)) fail(where, "is not a regular file");
  const std::uint64_t file_size = fs::file_size(path, ec);
  if (ec) fail(where, "cannot get file size: " + ec.message());

  std::ifstream in(path, std::ios::binary);
  if (!in) fail(where, "cannot open for reading");
  return read_safetensors(in, file_size, where, metadata);
}

TensorMap parse_safetensors(const std::string& bytes, const std::string& where,
                            Metadata* metadata) {
  std::istringstream in(bytes);
  return read_safetensors(in, bytes.size(), where, metadata);
}

void save_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                      const Metadata& metadata, const BlockTensorMap& blocks) {
  const std::string where = path.string();
  // ordered_json keeps HF's layout: "__metadata__" first, tensors in name order, and each
  // entry as dtype, shape, data_offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& meta = header["__metadata__"];
    meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }

  // Every tensor's bytes in name order: a torch tensor's storage or a block tensor's blocks.
  struct Payload {
    const void* data;
    std::uint64_t size;
  };
  std::vector<torch::Tensor> data;
  std::vector<Payload> payloads;
  data.reserve(tensors.size());
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) names.insert(name);
  for (const auto& [name, block] : blocks)
    if (!names.insert(name).second)
      fail(where, "tensor '" + one_line(name, 80) + "' given both as a tensor and as blocks");
  std::uint64_t offset = 0;
  for (const auto& name : names) {
    const std::string who = "tensor '" + one_line(name, 80) + "'";
    if (name == "__metadata__") fail(where, who + ": name is reserved for metadata");
    auto b = blocks.find(name);
    if (b != blocks.end()) {
      const DtypeInfo* dtype = block_dtype(b->second.type);
      if (dtype == nullptr || b->second.shape.empty())
        fail(where, who + ": blocks of an unsupported type or without a shape");
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < b->second.shape.size(); ++i) rows *= b->second.shape[i];
      const auto nbytes = static_cast<std::uint64_t>(
          rows * ((b->second.shape.back() + dtype->block - 1) / dtype->block) *
          static_cast<int64_t>(dtype->size));
      if (nbytes != b->second.bytes.size())
        fail(where, who + ": " + std::to_string(b->second.bytes.size()) + " bytes of blocks for " +
                        shape_string(b->second.shape) + " of " + dtype->name + " (" +
                        std::to_string(nbytes) + " expected)");
      auto& entry = header[name];
      entry["dtype"] = dtype->name;
      entry["shape"] = b->second.shape;
      entry["data_offsets"] = {offset, offset + nbytes};
      offset += nbytes;
      payloads.push_back({b->second.bytes.data(), nbytes});
      continue;
    }
    const auto& tensor = tensors.at(name);
    if (!tensor.defined()) fail(where, who + " is undefined");
    const DtypeInfo* dtype = dtype_by_type(tensor.scalar_type());
    if (dtype == nullptr)
      fail(where, who + ": dtype " + std::string(c10::toString(tensor.scalar_type())) +
                      " cannot be stored in safetensors");
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const auto nbytes = static_cast<std::uint64_t>(t.numel()) * dtype->size;
    auto& entry = header[name];
    entry["dtype"] = dtype->name;
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    offset += nbytes;
    data.push_back(std::move(t));
    payloads.push_back({data.back().data_ptr(), nbytes});
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    // dump() rejects names or metadata that are not valid UTF-8.
    fail(where, "cannot encode header (" + one_line(e.what()) + ")");
  }
  // Pad with spaces so the data section starts 8-byte aligned, as HF's writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  write_file_atomically(path, [&](std::ostream& out) {
    put_u64_le(out, header_text.size());
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const auto& p : payloads)
      if (p.size > 0)
        out.write(static_cast<const char*>(p.data), static_cast<std::streamsize>(p.size));
  });
}

}  // namespace flextron::io
