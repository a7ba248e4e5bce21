#include "io/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"

namespace flextron::io {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kAlignment = 32;
using quant::GgmlType;

uint64_t aligned(uint64_t n) {
  return (n + kAlignment - 1) / kAlignment * kAlignment;
}

// ---- writing ---------------------------------------------------------------------------------
class Writer {
 public:
  template <typename T>
  void put(T v) {
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_ += s;
  }
  void put_scalar(GgufType type, const nlohmann::json& v) {
    switch (type) {
      case GgufType::Uint8:
        return put<uint8_t>(v.get<uint8_t>());
      case GgufType::Int8:
        return put<int8_t>(v.get<int8_t>());
      case GgufType::Uint16:
        return put<uint16_t>(v.get<uint16_t>());
      case GgufType::Int16:
        return put<int16_t>(v.get<int16_t>());
      case GgufType::Uint32:
        return put<uint32_t>(v.get<uint32_t>());
      case GgufType::Int32:
        return put<int32_t>(v.get<int32_t>());
      case GgufType::Float32:
        return put<float>(v.get<float>());
      case GgufType::Bool:
        return put<uint8_t>(v.get<bool>() ? 1 : 0);
      case GgufType::String:
        return put_string(v.get<std::string>());
      case GgufType::Uint64:
        return put<uint64_t>(v.get<uint64_t>());
      case GgufType::Int64:
        return put<int64_t>(v.get<int64_t>());
      case GgufType::Float64:
        return put<double>(v.get<double>());
      case GgufType::Array:
        break;
    }
    fail("GGUF", "nested arrays are not written");
  }
  void pad() { bytes_.resize(aligned(bytes_.size()), '\0'); }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

// ---- reading ---------------------------------------------------------------------------------
class Reader {
 public:
  Reader(const std::string& bytes, std::string where) : bytes_(bytes), where_(std::move(where)) {}
  template <typename T>
  T get() {
    need(sizeof(T), "a value");
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string get_string() {
    const auto n = get<uint64_t>();
    need(n, "a string");
    std::string s = bytes_.substr(at_, n);
    at_ += n;
    return s;
  }
  nlohmann::json get_scalar(GgufType type) {
    switch (type) {
      case GgufType::Uint8:
        return get<uint8_t>();
      case GgufType::Int8:
        return get<int8_t>();
      case GgufType::Uint16:
        return get<uint16_t>();
      case GgufType::Int16:
        return get<int16_t>();
      case GgufType::Uint32:
        return get<uint32_t>();
      case GgufType::Int32:
        return get<int32_t>();
      case GgufType::Float32:
        return get<float>();
      case GgufType::Bool:
        return get<uint8_t>() != 0;
      case GgufType::String:
        return get_string();
      case GgufType::Uint64:
        return get<uint64_t>();
      case GgufType::Int64:
        return get<int64_t>();
      case GgufType::Float64:
        return get<double>();
      case GgufType::Array:
        break;
    }
    fail(where_, "metadata type " + std::to_string(static_cast<uint32_t>(type)) + " at byte " +
                     std::to_string(at_) + " is not a GGUF type");
  }
  void need(uint64_t n, const char* what) const {
    if (n > bytes_.size() - at_)
      fail(where_, std::string("truncated: ") + what + " at byte " + std::to_string(at_) +
                       " needs " + std::to_string(n) + " bytes, the file has " +
                       std::to_string(bytes_.size() - at_) + " left");
  }
  uint64_t at() const { return at_; }
  const std::string& where() const { return where_; }

 private:
  const std::string& bytes_;
  std::string where_;
  uint64_t at_ = 0;
};

bool valid_type(uint32_t t) {
  return t <= static_cast<uint32_t>(GgufType::Float64);
}

// The least bytes one array element of `type` takes (a string: its u64 length).
uint64_t min_size(GgufType type) {
  switch (type) {
    case GgufType::Uint8:
    case GgufType::Int8:
    case GgufType::Bool:
      return 1;
    case GgufType::Uint16:
    case GgufType::Int16:
      return 2;
    case GgufType::Uint32:
    case GgufType::Int32:
    case GgufType::Float32:
      return 4;
    default:
      return 8;
  }
}

bool is_unsigned(GgufType t) {
  return t == GgufType::Uint8 || t == GgufType::Uint16 || t == GgufType::Uint32 ||
         t == GgufType::Uint64;
}

GgmlType stored_type(const std::filesystem::path& path, const std::string& name,
                     torch::ScalarType dtype) {
  if (dtype == torch::kFloat) return GgmlType::F32;
  if (dtype == torch::kHalf) return GgmlType::F16;
  if (dtype == torch::kBFloat16) return GgmlType::BF16;
  fail(path, "tensor " + name + ": only float32, float16 and bfloat16 tensors are written");
}

// `data` (contiguous, CPU) as `type`'s bytes.
std::string tensor_bytes(const std::filesystem::path& path, const std::string& name,
                         torch::Tensor data, GgmlType type) {
  auto raw = [](const torch::Tensor& t) {
    return std::string(static_cast<const char*>(t.data_ptr()), t.nbytes());
  };
  switch (type) {
    case GgmlType::F32:
      return raw(data.to(torch::kFloat).contiguous());
    case GgmlType::F16:
      return raw(data.to(torch::kHalf).contiguous());
    case GgmlType::BF16:
      return raw(data.to(torch::kBFloat16).contiguous());
    case GgmlType::Q8_0:
    case GgmlType::Q4_0: {
      const int64_t row = data.dim() == 0 ? 1 : data.size(-1);
      if (row % quant::kQK != 0)
        fail(path, "tensor " + name + ": rows of " + std::to_string(row) +
                       " elements are not whole " + quant::type_info(type).name + " blocks of 32");
      data = data.to(torch::kFloat).contiguous();
      std::string out(static_cast<size_t>(quant::bytes_of(type, data.numel())), '\0');
      (type == GgmlType::Q8_0 ? quant::quantize_q8_0 : quant::quantize_q4_0_fitted)(
          data.data_ptr<float>(), out.data(), data.numel());
      return out;
    }
    default:
      break;
  }
  fail(path, "tensor " + name + ": ggml type " + quant::type_info(type).name +
                 " is not written (F32, F16, BF16, Q8_0, Q4_0)");
}

}  // namespace

GgufValue gguf_string(const std::string& s) {
  return {GgufType::String, GgufType::String, s};
}
GgufValue gguf_u32(uint32_t v) {
  return {GgufType::Uint32, GgufType::String, v};
}
GgufValue gguf_f32(float v) {
  return {GgufType::Float32, GgufType::String, v};
}
GgufValue gguf_array(GgufType element, nlohmann::json values) {
  return {GgufType::Array, element, std::move(values)};
}

void write_gguf(const std::filesystem::path& path, const GgufFile& file) {
  Writer w;
  w.put<uint32_t>(kMagic);
  w.put<uint32_t>(3);
  w.put<uint64_t>(file.tensors.size());
  w.put<uint64_t>(file.metadata.size());
  for (const auto& [key, v] : file.metadata) {
    w.put_string(key);
    w.put<uint32_t>(static_cast<uint32_t>(v.type));
    if (v.type == GgufType::Array) {
      w.put<uint32_t>(static_cast<uint32_t>(v.element));
      w.put<uint64_t>(v.value.size());
      for (const auto& e : v.value) w.put_scalar(v.element, e);
    } else {
      w.put_scalar(v.type, v.value);
    }
  }
  uint64_t offset = 0;
  std::vector<std::string> payloads;  // each tensor's bytes as stored
  for (const auto& t : file.tensors) {
    auto data = t.data.detach().to(torch::kCPU).contiguous();
    const auto type = t.type ? *t.type : stored_type(path, t.name, data.scalar_type());
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(data.dim()));
    for (int64_t d = data.dim() - 1; d >= 0; --d) w.put<uint64_t>(data.size(d));
    w.put<uint32_t>(static_cast<uint32_t>(type));
    w.put<uint64_t>(offset);
    payloads.push_back(tensor_bytes(path, t.name, data, type));
    offset = aligned(offset + payloads.back().size());
  }
  w.pad();
  for (auto& payload : payloads) {
    w.bytes() += payload;
    std::string().swap(payload);
    w.pad();
  }
  write_text_atomically(path, w.bytes());
}

GgufFile read_gguf(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path, "cannot open (missing file?)");
  const auto size = static_cast<std::streamoff>(in.tellg());
  if (size < 0) fail(path, "cannot read (not a file?)");
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()))) fail(path, "cannot read");
  return parse_gguf(bytes, path.string());
}

GgufFile parse_gguf(const std::string& bytes, const std::string& where) {
  const std::string& path = where;
  Reader r(bytes, where);
  if (bytes.size() < 4 || r.get<uint32_t>() != kMagic) fail(path, "not a GGUF file (bad magic)");
  const auto version = r.get<uint32_t>();
  if (version != 2 && version != 3)
    fail(path, "GGUF version " + std::to_string(version) + " is not supported (2 or 3)");
  const auto tensor_count = r.get<uint64_t>();
  const auto metadata_count = r.get<uint64_t>();
  // A metadata entry takes at least 13 bytes (key length, type, one byte), a tensor info 32
  // (name length, n_dims, one dimension, type, offset): larger counts are corruption.
  const uint64_t left = bytes.size() - r.at();
  if (metadata_count > left / 13 || tensor_count > left / 32 ||
      metadata_count * 13 + tensor_count * 32 > left)
    fail(path, "truncated or corrupt header: " + std::to_string(tensor_count) + " tensors and " +
                   std::to_string(metadata_count) + " metadata entries cannot fit in " +
                   std::to_string(bytes.size()) + " bytes");
  GgufFile file;
  uint64_t alignment = kAlignment;
  for (uint64_t i = 0; i < metadata_count; ++i) {
    const auto key = r.get_string();
    if (file.metadata.count(key)) fail(path, "metadata key \"" + key + "\" appears twice");
    const auto type = r.get<uint32_t>();
    if (!valid_type(type))
      fail(path, "metadata \"" + key + "\" has unknown type " + std::to_string(type));
    GgufValue v;
    v.type = static_cast<GgufType>(type);
    if (v.type == GgufType::Array) {
      const auto element = r.get<uint32_t>();
      if (!valid_type(element) || element == static_cast<uint32_t>(GgufType::Array))
        fail(path, "metadata \"" + key + "\" has an unsupported array element type " +
                       std::to_string(element));
      v.element = static_cast<GgufType>(element);
      const auto n = r.get<uint64_t>();
      if (n > (bytes.size() - r.at()) / min_size(v.element))
        fail(path, "truncated or corrupt: metadata \"" + key + "\" claims " + std::to_string(n) +
                       " array elements at byte " + std::to_string(r.at()) + ", the file has " +
                       std::to_string(bytes.size() - r.at()) + " bytes left");
      v.value = nlohmann::json::array();
      for (uint64_t k = 0; k < n; ++k) v.value.push_back(r.get_scalar(v.element));
    } else {
      v.value = r.get_scalar(v.type);
    }
    if (key == "general.alignment") {
      if (!is_unsigned(v.type))
        fail(path, "general.alignment must be an unsigned integer, got " + v.value.dump());
      alignment = v.value.get<uint64_t>();
      if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (1u << 20))
        fail(path, "general.alignment " + std::to_string(alignment) +
                       " is not a power of two up to 2^20");
    }
    file.metadata[key] = std::move(v);
  }
  struct Info {
    std::string name;
    std::vector<int64_t> shape;  // torch order
    const quant::TypeInfo* type;
    uint64_t numel, offset, nbytes;
  };
  std::vector<Info> infos;
  std::set<std::string> names;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    Info info;
    info.name = r.get_string();
    const auto& name = info.name;
    if (!names.insert(name).second) fail(path, "tensor " + name + " appears twice");
    const auto dims = r.get<uint32_t>();
    if (dims == 0 || dims > 4)
      fail(path, "tensor " + name + " has " + std::to_string(dims) + " dimensions (1 to 4)");
    std::vector<int64_t> ne;
    info.numel = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const auto n = r.get<uint64_t>();
      if (n == 0 || n > static_cast<uint64_t>(INT64_MAX) ||
          __builtin_mul_overflow(info.numel, n, &info.numel) ||
          info.numel > static_cast<uint64_t>(INT64_MAX))
        fail(path, "tensor " + name + " has an impossible shape (dimension " + std::to_string(d) +
                       " is " + std::to_string(n) + ")");
      ne.push_back(static_cast<int64_t>(n));
    }
    info.shape.assign(ne.rbegin(), ne.rend());
    const auto type = r.get<uint32_t>();
    info.type = quant::find_type(type);
    if (info.type == nullptr && quant::unread_type_name(type) != nullptr)
      fail(path, "tensor " + name + " has ggml type " + quant::unread_type_name(type) + " (" +
                     std::to_string(type) +
                     "), which is not read (read: " + quant::dequantized_type_names() + ")");
    if (info.type == nullptr)
      fail(path, "tensor " + name + " has unknown ggml type id " + std::to_string(type));
    if (!info.type->dequantized)
      fail(path, "tensor " + name + " has ggml type " + info.type->name + " (" +
                     std::to_string(type) +
                     "), which is not read (read: " + quant::dequantized_type_names() + ")");
    const auto block = static_cast<uint64_t>(info.type->block_size);
    if (ne[0] % block != 0)
      fail(path, "tensor " + name + ": rows of " + std::to_string(ne[0]) + " elements are not " +
                     "whole " + info.type->name + " blocks of " + std::to_string(block));
    if (__builtin_mul_overflow(info.numel / block, static_cast<uint64_t>(info.type->block_bytes),
                               &info.nbytes))
      fail(path, "tensor " + name + " has an impossible shape (its byte size overflows)");
    info.offset = r.get<uint64_t>();
    if (info.offset % alignment != 0)
      fail(path, "tensor " + name + " offset " + std::to_string(info.offset) +
                     " is not a multiple of general.alignment " + std::to_string(alignment));
    infos.push_back(std::move(info));
  }
  // The data section starts at the next multiple of the alignment (possibly past the end when
  // there are no tensors).
  const uint64_t data_start = (r.at() + alignment - 1) / alignment * alignment;
  const uint64_t data_size = data_start <= bytes.size() ? bytes.size() - data_start : 0;
  for (const auto& info : infos)
    if (info.offset > data_size || info.nbytes > data_size - info.offset)
      fail(path, "truncated: tensor " + info.name + " (bytes " + std::to_string(info.offset) +
                     " + " + std::to_string(info.nbytes) + " of the data section) lies outside " +
                     "the file's " + std::to_string(data_size) + " data bytes");
  std::vector<const Info*> by_offset;
  for (const auto& info : infos) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Info* a, const Info* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      fail(path, "tensors " + by_offset[i - 1]->name + " and " + by_offset[i]->name + " overlap");
  for (const auto& info : infos) {
    const char* src = bytes.data() + data_start + info.offset;
    const auto id = info.type->id;
    torch::Tensor t;
    if (id == GgmlType::F32 || id == GgmlType::F16 || id == GgmlType::BF16) {
      t = torch::empty(info.shape, id == GgmlType::F32   ? torch::kFloat
                                   : id == GgmlType::F16 ? torch::kHalf
                                                         : torch::kBFloat16);
      std::memcpy(t.data_ptr(), src, info.nbytes);
    } else {
      t = torch::empty(info.shape, torch::kFloat);
      quant::dequantize(id, src, t.data_ptr<float>(), static_cast<int64_t>(info.numel));
    }
    file.tensors.push_back({info.name, t, id});
  }
  return file;
}

}  // namespace flextron::io
