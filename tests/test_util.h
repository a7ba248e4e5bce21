// Shared test helpers: where the real test data lives and a scratch directory per test.
#pragma once

#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "flextron_test_paths.h"

namespace flextron::testing {

// ../shared/data beside the project (README there lists the files).
inline std::filesystem::path shared_data() {
  return FLEXTRON_SHARED_DATA;
}

// The flextron CLI binary built alongside the tests.
inline std::string cli() {
  return FLEXTRON_CLI;
}

// A fresh, empty directory under the system temp dir, unique to the running test.
inline std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() / "flextron_tests" /
             (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `flextron <args>` through the shell (args are shell words), capturing stdout and stderr.
inline CliResult run_cli(const std::string& args) {
  static int counter = 0;
  const auto base = std::filesystem::temp_directory_path() / "flextron_tests";
  std::filesystem::create_directories(base);
  const auto out_path =
      base / ("cli_out_" + std::to_string(::getpid()) + "_" + std::to_string(counter));
  const auto err_path =
      base / ("cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const std::string command = "'" + cli() + "' " + args + " >'" + out_path.string() + "' 2>'" +
                              err_path.string() + "' </dev/null";
  const int status = std::system(command.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  return r;
}

}  // namespace flextron::testing

// Skips the current test with a clear message when ../shared/data is absent (a user's clone).
#define FLEXTRON_REQUIRE_SHARED_DATA()                                                    \
  do {                                                                                    \
    if (!std::filesystem::exists(flextron::testing::shared_data() / "README.md"))         \
      GTEST_SKIP() << "../shared/data not found at " << flextron::testing::shared_data(); \
  } while (0)
