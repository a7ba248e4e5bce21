#include "io/gguf.h"

#include <cstring>
#include <fstream>

#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"

namespace flextron::io {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kAlignment = 32;
constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1;

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
  std::vector<torch::Tensor> contiguous;
  for (const auto& t : file.tensors) {
    auto data = t.data.detach().to(torch::kCPU).contiguous();
    if (data.scalar_type() != torch::kFloat && data.scalar_type() != torch::kHalf)
      fail(path, "tensor " + t.name + ": only F32 and F16 are written");
    w.put_string(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(data.dim()));
    for (int64_t d = data.dim() - 1; d >= 0; --d) w.put<uint64_t>(data.size(d));
    w.put<uint32_t>(data.scalar_type() == torch::kFloat ? kGgmlF32 : kGgmlF16);
    w.put<uint64_t>(offset);
    offset = aligned(offset + data.nbytes());
    contiguous.push_back(data);
  }
  w.pad();
  for (const auto& data : contiguous) {
    w.bytes().append(static_cast<const char*>(data.data_ptr()), data.nbytes());
    w.pad();
  }
  write_text_atomically(path, w.bytes());
}

GgufFile read_gguf(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open (missing file?)");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Reader r(bytes, path.string());
  if (bytes.size() < 4 || r.get<uint32_t>() != kMagic) fail(path, "not a GGUF file (bad magic)");
  const auto version = r.get<uint32_t>();
  if (version != 2 && version != 3)
    fail(path, "GGUF version " + std::to_string(version) + " is not supported (2 or 3)");
  const auto tensor_count = r.get<uint64_t>();
  const auto metadata_count = r.get<uint64_t>();
  // Each entry takes at least 8 bytes: counts beyond the file size are corruption.
  if (tensor_count > bytes.size() / 8 || metadata_count > bytes.size() / 8)
    fail(path, "truncated or corrupt header: " + std::to_string(tensor_count) + " tensors and " +
                   std::to_string(metadata_count) + " metadata entries cannot fit in " +
                   std::to_string(bytes.size()) + " bytes");
  GgufFile file;
  uint64_t alignment = kAlignment;
  for (uint64_t i = 0; i < metadata_count; ++i) {
    const auto key = r.get_string();
    const auto type = r.get<uint32_t>();
    if (!valid_type(type))
      fail(path, "metadata \"" + key + "\" has unknown type " + std::to_string(type));
    GgufValue v;
    v.type = static_cast<GgufType>(type);
    if (v.type == GgufType::Array) {
      const auto element = r.get<uint32_t>();
      if (!valid_type(element) || element == static_cast<uint32_t>(GgufType::Array))
        fail(path, "metadata \"" + key + "\" has an unsupported array element type");
      v.element = static_cast<GgufType>(element);
      const auto n = r.get<uint64_t>();
      r.need(n, "an array");  // at least one byte per element
      v.value = nlohmann::json::array();
      for (uint64_t k = 0; k < n; ++k) v.value.push_back(r.get_scalar(v.element));
    } else {
      v.value = r.get_scalar(v.type);
    }
    if (key == "general.alignment" && v.value.is_number_unsigned())
      alignment = v.value.get<uint64_t>();
    file.metadata[key] = std::move(v);
  }
  if (alignment == 0 || alignment % 8 != 0) fail(path, "general.alignment must be a multiple of 8");
  struct Info {
    std::string name;
    std::vector<int64_t> shape;
    uint32_t type;
    uint64_t offset;
  };
  std::vector<Info> infos;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    Info info;
    info.name = r.get_string();
    const auto dims = r.get<uint32_t>();
    if (dims == 0 || dims > 4)
      fail(path, "tensor " + info.name + " has " + std::to_string(dims) + " dimensions");
    std::vector<int64_t> ne;
    for (uint32_t d = 0; d < dims; ++d) {
      const auto n = r.get<uint64_t>();
      if (n == 0 || n > bytes.size()) fail(path, "tensor " + info.name + " has an impossible size");
      ne.push_back(static_cast<int64_t>(n));
    }
    info.shape.assign(ne.rbegin(), ne.rend());
    info.type = r.get<uint32_t>();
    if (info.type != kGgmlF32 && info.type != kGgmlF16)
      fail(path, "tensor " + info.name + " has ggml type " + std::to_string(info.type) +
                     " (only F32 and F16 are read; quantised files are not)");
    info.offset = r.get<uint64_t>();
    infos.push_back(std::move(info));
  }
  const uint64_t data_start = (r.at() + alignment - 1) / alignment * alignment;
  for (const auto& info : infos) {
    int64_t numel = 1;
    for (auto d : info.shape) numel *= d;
    const uint64_t nbytes = static_cast<uint64_t>(numel) * (info.type == kGgmlF32 ? 4 : 2);
    if (data_start + info.offset > bytes.size() || nbytes > bytes.size() - data_start - info.offset)
      fail(path, "truncated: tensor " + info.name + " lies outside the file");
    auto t = torch::empty(info.shape, info.type == kGgmlF32 ? torch::kFloat : torch::kHalf);
    std::memcpy(t.data_ptr(), bytes.data() + data_start + info.offset, nbytes);
    file.tensors.push_back({info.name, t});
  }
  return file;
}

}  // namespace flextron::io
