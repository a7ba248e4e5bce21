// Reading whole files with errors that name the file: one place for what every loader needs.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace flextron::io {

// The file's bytes. Throws flextron::Error "<path>: cannot open ..." for a missing file or a
// directory.
std::string read_file(const std::filesystem::path& path);

// The file parsed as JSON. Throws flextron::Error naming the path for a missing file or
// invalid JSON (with the parser's position).
nlohmann::json read_json_file(const std::filesystem::path& path);

// Where a command writes its one output file given --out: `out` itself, or out/default_name
// when `out` is an existing directory or ends in '/' (created if missing).
std::filesystem::path output_file(const std::filesystem::path& out,
                                  const std::string& default_name);

}  // namespace flextron::io
