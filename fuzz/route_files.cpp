// The routing files of a Flextron directory, checked against the tiny model: the first byte
// picks latency.json (0), flextron.json (the elastic space, 1) or router.json (2, beside a
// router.safetensors made for the same space); the rest is the file. What loads is used once
// (a prediction, a space check).
#include <filesystem>

#include <nlohmann/json.hpp>

#include "fuzz_target.h"
#include "io/atomic_file.h"
#include "model/elastic_space.h"
#include "model/transformer.h"
#include "route/latency.h"
#include "route/router_file.h"

FLEXTRON_FUZZ_TARGET(route_files) {
  using namespace flextron;
  if (size == 0) return 0;
  static const auto config = fuzz::tiny_config();
  static const auto space = model::default_elastic_space(config);
  const auto text = fuzz::bytes_of(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz::expect_clean([&] {
        const auto table =
            route::load_latency_table(fuzz::scratch_file("latency.json", text), config, space);
        table.decode_ms(model::full_architecture(config));
      });
      break;
    case 1: {
      const auto j = nlohmann::json::parse(text, nullptr, false);
      if (j.is_discarded()) return 0;
      fuzz::expect_clean([&] {
        const auto parsed = model::elastic_space_from_json(j, config, "flextron.json");
        model::check_elastic_space(parsed, config, "flextron.json");
      });
      break;
    }
    default: {
      static const auto dir = [] {
        const auto d = fuzz::scratch_dir("routers");
        route::save_routers(d, route::make_routers(config, space, fuzz::kTinyBudgets, true));
        return d;
      }();
      io::write_text_atomically(dir / route::kRouterFile, text);
      fuzz::expect_clean([&] { route::load_routers(dir, config, space); });
      break;
    }
  }
  return 0;
}
