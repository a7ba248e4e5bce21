// One error type for every user-facing failure: the message names where (a file, a flag,
// a field) and what went wrong, so the CLI can print it on one line and exit non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace flextron {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws Error("<where>: <what>").
[[noreturn]] void fail(const std::string& where, const std::string& what);

}  // namespace flextron
