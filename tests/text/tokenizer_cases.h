// llama.cpp's tokenizer test cases (tokenizers/llama.cpp/*.inp / .out): inputs joined by
// "\n__ggml_vocab_test__\n" (also after the last one), one line of space-separated ids each,
// which HF `tokenizers` produced for the family's own tokenizer.json (no BOS).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace flextron::testing {

struct TokenizerCase {
  std::string input;
  std::vector<int64_t> expected;
};

inline std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot open " << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::vector<TokenizerCase> read_tokenizer_cases(const std::filesystem::path& inp,
                                                       const std::filesystem::path& out) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::string text = read_all(inp);
  std::vector<TokenizerCase> cases;
  for (size_t at; (at = text.find(sep)) != std::string::npos; text.erase(0, at + sep.size()))
    cases.push_back({text.substr(0, at), {}});
  EXPECT_EQ(text, "") << "trailing input without a separator";
  std::istringstream lines(read_all(out));
  std::string line;
  size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    for (int64_t id; ids >> id;) cases[i].expected.push_back(id);
  }
  EXPECT_EQ(i, cases.size()) << "the .out file has a different number of cases";
  return cases;
}

inline std::string ids_text(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return "[" + s + "]";
}

// The string as a JSON literal, readable in failure messages even when it is not UTF-8.
inline std::string quoted_text(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace flextron::testing
