#include "io/atomic_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace flextron::io {

void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write) {
  // Checked first: "DIR/" would otherwise write "DIR/.tmp" and fail only at the rename.
  std::error_code status_ec;
  if (!path.has_filename() || std::filesystem::is_directory(path, status_ec))
    fail(path.string(), "is a directory; give a file path");
  auto tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp.string(), std::string("cannot open for writing: ") + std::strerror(errno));
    write(out);
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail(tmp.string(), "write failed (disk full?)");
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    // The rename's error is reported, not the clean-up's (which would overwrite it).
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    fail(path.string(), "cannot rename temporary file into place: " + ec.message());
  }
}

void write_text_atomically(const std::filesystem::path& path, const std::string& content) {
  write_file_atomically(path, [&](std::ostream& out) { out << content; });
}

}  // namespace flextron::io
