#include "text/utf8.h"

#include "core/error.h"
#include "io/files.h"

namespace flextron::text {

std::optional<size_t> find_invalid_utf8(std::string_view data) {
  const auto* s = reinterpret_cast<const unsigned char*>(data.data());
  const size_t n = data.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t min = 0, cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, min = 0x800, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    } else {
      return i;  // continuation byte without a lead, or 0xF8..0xFF
    }
    if (i + len > n) return i;  // sequence cut by the end of the data
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::nullopt;
}

std::string valid_utf8(std::string_view data) {
  std::string out;
  out.reserve(data.size());
  while (!data.empty()) {
    const auto bad = find_invalid_utf8(data);
    if (!bad) {
      out.append(data);
      break;
    }
    out.append(data.substr(0, *bad));
    out.append("\xEF\xBF\xBD");
    data.remove_prefix(*bad + 1);
  }
  return out;
}

void check_utf8(std::string_view data, const std::string& where, size_t base_offset) {
  if (auto bad = find_invalid_utf8(data))
    fail(where, "invalid UTF-8 at byte offset " + std::to_string(base_offset + *bad));
}

std::string read_utf8_file(const std::filesystem::path& path) {
  std::string text = io::read_file(path);
  if (text.empty()) fail(path.string(), "empty file");
  check_utf8(text, path.string());
  return text;
}

}  // namespace flextron::text
