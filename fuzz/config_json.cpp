// config.json bytes: HF's Llama / Mistral / Qwen2 / GPT-2 configs, the sizes validated and
// bounded before anything is sized from them (the parameter count must be computable).
#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "model/config.h"
#include "model/extract.h"

FLEXTRON_FUZZ_TARGET(config_json) {
  using namespace flextron;
  const auto j = nlohmann::json::parse(fuzz::bytes_of(data, size), nullptr, false);
  if (j.is_discarded()) return 0;  // not JSON: the file readers report that themselves
  fuzz::expect_clean([&] {
    const auto config = model::config_from_json(j, "config.json");
    config.validate("config.json");
    model::subnetwork_parameter_count(config, {});
  });
  return 0;
}
