#include "io/files.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace flextron::io {

std::string read_file(const std::filesystem::path& path) {
  if (std::filesystem::is_directory(path)) fail(path.string(), "is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), "cannot open (missing file?)");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(path.string(), "read error");
  return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), std::string("invalid JSON: ") + e.what());
  }
}

std::filesystem::path output_file(const std::filesystem::path& out,
                                  const std::string& default_name) {
  if (out.empty()) fail("--out", "is empty");
  const bool directory = !out.has_filename() || std::filesystem::is_directory(out);
  const auto file = directory ? out / default_name : out;
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  return file;
}

}  // namespace flextron::io
