// Shared test helpers: where the real test data lives and a scratch directory per test.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace flextron::testing {

// ../shared/data beside the project (README there lists the files).
inline std::filesystem::path shared_data() { return FLEXTRON_SHARED_DATA; }

// The flextron CLI binary built alongside the tests.
inline std::string cli() { return FLEXTRON_CLI; }

// A fresh, empty directory under the system temp dir, unique to the running test.
inline std::filesystem::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto dir = std::filesystem::temp_directory_path() / "flextron_tests" /
             (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace flextron::testing

// Skips the current test with a clear message when ../shared/data is absent (a user's clone).
#define FLEXTRON_REQUIRE_SHARED_DATA()                                                 \
  do {                                                                                 \
    if (!std::filesystem::exists(flextron::testing::shared_data() / "README.md"))      \
      GTEST_SKIP() << "../shared/data not found at " << flextron::testing::shared_data(); \
  } while (0)
