// CLI test fixtures shared by the CLI test files: stories260K imported through the CLI, and the
// shape of a good error (one line on stderr naming where and what, non-zero exit, no crash).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>

#include "test_util.h"

namespace flextron::testing {

// A path as one shell word for run_cli.
inline std::string quote(const std::filesystem::path& p) {
  return "'" + p.string() + "'";
}

// Imports stories260K into `dir` through the CLI.
inline std::filesystem::path import_stories(const std::filesystem::path& dir) {
  const auto out = dir / "stories";
  auto r = run_cli("import --from llama2c --model '" +
                   (shared_data() / "stories260K/stories260K.bin").string() + "' --tokenizer '" +
                   (shared_data() / "stories260K/tok512.bin").string() + "' --out '" +
                   out.string() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// One line on stderr that names `where`, non-zero exit.
inline void expect_one_line_error(const CliResult& r, const std::string& where,
                                  const std::string& what) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(where), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

}  // namespace flextron::testing
