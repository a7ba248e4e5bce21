// --speculative and its draft flags, for the commands that decode on the fast runtime
// (generate, serve, bench): see runtime/speculative.h and route/draft.h.
#pragma once

#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

#include "route/draft.h"

namespace flextron::cli {

struct SpeculativeArgs {
  bool on = false;
  route::DraftRequest draft;
  int64_t draft_tokens = 0;  // 0: adaptive

  void add_to(CLI::App* cmd);
};

}  // namespace flextron::cli
