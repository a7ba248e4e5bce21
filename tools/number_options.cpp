#include "number_options.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

#include "core/error.h"
#include "core/parse.h"

namespace flextron::cli {

namespace {

std::string text_of(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

// Reads `text` as a finite real into `x`; the error when it is not one, else empty.
std::string finite_number_error(const std::string& text, double& x) {
  try {
    x = parse_double(text, "");
  } catch (const Error&) {
    return "\"" + text + "\" is not a number";
  }
  if (!std::isfinite(x)) return "\"" + text + "\" is not a finite number";
  return {};
}

// A validator over the option's value as a finite real: `holds` says whether it is in range,
// `wanted` completes "... is not " in the message.
template <typename Holds>
CLI::Validator real_check(const std::string& description, const std::string& wanted, Holds holds) {
  return CLI::Validator(
      [wanted, holds](std::string& text) -> std::string {
        double x = 0;
        if (auto error = finite_number_error(text, x); !error.empty()) return error;
        if (!holds(x)) return text + " is not " + wanted;
        return {};
      },
      description);
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n';
}

// The option's value type as CLI11 names it (before any validator's description).
std::string base_type(const CLI::Option& option) {
  const auto name = option.get_type_name();
  return name.substr(0, name.find(':'));
}

std::string whole_number_error(const std::string& type, const std::string& text) {
  if (text.empty() || is_space(text.front()) || is_space(text.back()))
    return "\"" + text + "\" is not a number";
  if (type == "FLOAT") {
    double x = 0;
    return finite_number_error(text, x);
  }
  if (type == "UINT" && text.front() == '-') return text + " is negative";
  try {
    parse_int(text, "");
    return {};
  } catch (const Error&) {
  }
  // Not an int64: say whether it is a number at all, so that "1e9" and overflow read clearly.
  const bool digits = text.find_first_not_of("+-0123456789") == std::string::npos;
  if (digits)
    return "\"" + text + "\" is not an integer that fits (the largest is " +
           std::to_string(std::numeric_limits<int64_t>::max()) + ")";
  return "\"" + text + "\" is not a whole number";
}

}  // namespace

CLI::Validator positive() {
  return real_check("> 0", "a positive number", [](double x) { return x > 0; });
}

CLI::Validator non_negative() {
  return real_check(">= 0", "zero or more", [](double x) { return x >= 0; });
}

CLI::Validator at_least(double min) {
  return real_check(">= " + text_of(min), "at least " + text_of(min),
                    [min](double x) { return x >= min; });
}

CLI::Validator in_range(double lo, double hi) {
  return real_check("in [" + text_of(lo) + ", " + text_of(hi) + "]",
                    "in [" + text_of(lo) + ", " + text_of(hi) + "]",
                    [lo, hi](double x) { return x >= lo && x <= hi; });
}

CLI::Validator unit_fraction() {
  return real_check("in (0, 1]", "in (0, 1]", [](double x) { return x > 0 && x <= 1; });
}

void check_every_number(CLI::App& app) {
  for (auto* option : app.get_options()) {
    const auto type = base_type(*option);
    if (type != "INT" && type != "UINT" && type != "FLOAT") continue;
    option->check(
        CLI::Validator([type](std::string& text) { return whole_number_error(type, text); }, ""));
  }
  for (auto* sub : app.get_subcommands([](CLI::App*) { return true; })) check_every_number(*sub);
}

}  // namespace flextron::cli
