#include "pipeline/quantize.h"

#include <system_error>

#include "core/error.h"
#include "io/model_dir.h"
#include "route/latency.h"
#include "route/router_file.h"

namespace flextron::pipeline {

namespace fs = std::filesystem;

namespace {

int64_t weight_file_bytes(const fs::path& dir) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".safetensors")
      total += static_cast<int64_t>(entry.file_size(ec));
  return total;
}

}  // namespace

QuantizeResult quantize_model_dir(const fs::path& from, const fs::path& to,
                                  runtime::qk::WeightFormat format) {
  if (format == runtime::qk::WeightFormat::F32)
    fail("--type", "quantize writes q8_0 or q4_0 blocks (f32 is what import / export write)");
  std::error_code ec;
  if (fs::exists(to) && fs::equivalent(from, to, ec))
    fail("--out", "is the source directory; write the quantized model elsewhere");
  auto loaded = io::load_model_dir(from);
  QuantizeResult r;
  r.bytes_before = weight_file_bytes(from);
  const auto type =
      format == runtime::qk::WeightFormat::Q8_0 ? quant::GgmlType::Q8_0 : quant::GgmlType::Q4_0;
  io::save_model_dir(to, *loaded.model, loaded.tokenizer.get(), &loaded.space, type);
  r.bytes_after = weight_file_bytes(to);
  // The routers (their table and weights) choose architectures, which do not depend on the
  // weight format.
  for (const char* file : {route::kRouterFile, route::kRouterWeightsFile})
    if (fs::exists(from / file)) {
      fs::copy_file(from / file, to / file, fs::copy_options::overwrite_existing);
      r.notes.push_back(std::string("copied ") + file);
    }
  if (fs::exists(from / route::kLatencyFile)) {
    fs::remove(to / route::kLatencyFile, ec);
    r.notes.push_back(std::string(route::kLatencyFile) + " left out: it was profiled for " +
                      loaded.stored_weights + " weights; budgets need `flextron profile --model " +
                      to.string() + " --quant " + runtime::qk::format_name(format) + "`");
  }
  return r;
}

}  // namespace flextron::pipeline
