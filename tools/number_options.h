// Numbers on the command line, one way for every option: the whole text parsed by core/parse.h
// (no overflow, no trailing characters), finite, and inside the range where the option means
// something. A bad value is a CLI11 validation error that names the option:
//   --tokens: 0 is not a positive number
//   --tokens: "99999999999999999999" is not an integer that fits (the largest is
//   9223372036854775807)
#pragma once

#include <CLI/CLI.hpp>

namespace flextron::cli {

CLI::Validator positive();                      // > 0
CLI::Validator non_negative();                  // >= 0
CLI::Validator at_least(double min);            // >= min
CLI::Validator in_range(double lo, double hi);  // lo <= x <= hi
CLI::Validator unit_fraction();                 // 0 < x <= 1

// Checks every numeric option of `app` and of its subcommands (CLI11's INT, UINT and FLOAT
// options) for a whole number of its type: an integer in range of int64 (of uint64 and not
// negative for UINT), a real that is finite. Call once, after every option is declared.
void check_every_number(CLI::App& app);

}  // namespace flextron::cli
