#include "core/error.h"

namespace flextron {

void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

}  // namespace flextron
