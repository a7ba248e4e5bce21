#include "core/parse.h"

#include <sstream>
#include <stdexcept>

#include "core/error.h"

namespace flextron {

namespace {
template <typename T, typename Convert>
T parse_whole(const std::string& text, const std::string& where, const char* what,
              Convert convert) {
  try {
    size_t used = 0;
    T value = convert(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  fail(where, "\"" + text + "\" is not " + what);
}

}  // namespace

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) items.push_back(item);
  if (!text.empty() && text.back() == ',') items.emplace_back();
  return items;
}

double parse_double(const std::string& text, const std::string& where) {
  return parse_whole<double>(text, where, "a number",
                             [](const std::string& s, size_t* used) { return std::stod(s, used); });
}

int64_t parse_int(const std::string& text, const std::string& where) {
  return parse_whole<int64_t>(text, where, "an integer", [](const std::string& s, size_t* used) {
    return static_cast<int64_t>(std::stoll(s, used));
  });
}

std::vector<double> parse_double_list(const std::string& text, const std::string& where) {
  std::vector<double> out;
  for (const auto& item : split_list(text)) out.push_back(parse_double(item, where));
  return out;
}

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& where) {
  std::vector<int64_t> out;
  for (const auto& item : split_list(text)) out.push_back(parse_int(item, where));
  return out;
}

}  // namespace flextron
