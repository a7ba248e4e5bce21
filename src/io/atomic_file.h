// Writing files so that a crash never leaves a half-written one behind: write "<path>.tmp",
// flush, then rename over <path> (rename is atomic within a file system).
#pragma once

#include <filesystem>
#include <functional>
#include <ostream>
#include <string>

namespace flextron::io {

// Calls write(stream) on "<path>.tmp", checks the stream, then renames it to `path`.
// Throws flextron::Error naming the path if anything fails (the temp file is removed).
void write_file_atomically(const std::filesystem::path& path,
                           const std::function<void(std::ostream&)>& write);

// Convenience: the whole content at once.
void write_text_atomically(const std::filesystem::path& path, const std::string& content);

}  // namespace flextron::io
