// The options of flextron bench --speculative (tools/cmd_bench_speculative.cpp).
#pragma once

#include <string>

#include "runtime/sampler.h"
#include "speculative_options.h"

namespace flextron::cli {

struct SpeculativeBenchArgs {
  std::string model;
  SpeculativeArgs speculative;
  std::string prompts;  // a file, one prompt a line; empty: eight built-in story openings
  int64_t tokens = 256;
  int64_t repeat = 3;
  runtime::SamplingOptions sampling{0.0, 1.0, 42};
  int threads = 0;
  std::string quant = "auto";
  bool json = false;
  std::string json_out;
};

void run_speculative_bench(const SpeculativeBenchArgs& args);

}  // namespace flextron::cli
