// Numbers typed by a user (command-line values, comma-separated lists), with errors that name the
// option: one place for what every option parser needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flextron {

// The whole of `text` as a number; throws flextron::Error naming `where` otherwise ("nan" and
// "inf" parse: range checks are the caller's).
double parse_double(const std::string& text, const std::string& where);
int64_t parse_int(const std::string& text, const std::string& where);

// "a,b,,c" -> {"a", "b", "", "c"}: the items of a comma-separated option, empty ones kept.
std::vector<std::string> split_list(const std::string& text);

// "0.4,0.5,1" -> {0.4, 0.5, 1}; an empty item is an error.
std::vector<double> parse_double_list(const std::string& text, const std::string& where);
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& where);

}  // namespace flextron
