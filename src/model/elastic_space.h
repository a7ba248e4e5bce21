// The elastic space of a model (FLEXTRON.md section 1): per layer, the MLP widths (neurons) and
// attention widths (KV groups) a sub-network may use, kept in the model directory as
// flextron.json. And the architectures users type: one MLP and one attention width per layer.
//
// Text forms of an architecture (values are fractions of the layer's full width in (0, 1], or
// whole unit counts > 1):
//   uniform    "mlp=0.5,attn=0.75"              (a missing kind stays at full width)
//   per layer  "mlp:0.5,0.5,0.75,1,1;attn:1,0.5,0.5,1,1"
//   JSON file  {"layers": [{"mlp": 88, "kv_groups": 2}, ...]}  (unit counts, as written by us)
// A fraction f resolves like the space's defaults: f * full rounded to the space's multiple, so
// "mlp=0.5" names the same width as the 1/2 entry of the default grid.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/config.h"
#include "model/transformer.h"

namespace flextron::model {

struct ElasticSpace {
  // Per layer, ascending allowed neuron counts / KV group counts; the last is the full width.
  std::vector<std::vector<int64_t>> mlp;
  std::vector<std::vector<int64_t>> kv_groups;
  int64_t mlp_multiple = 8;  // fractions round to multiples of this many neurons
  bool ranked = false;       // units sorted by importance (written by `flextron rank`)
};

struct ElasticSpaceOptions {
  std::vector<double> mlp_fractions{0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0};
  std::vector<double> attn_fractions{0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0};
  int64_t mlp_multiple = 0;  // 0: 16 for layers of >= 1024 neurons, else 8
};

// The file name inside a model directory.
inline constexpr const char* kElasticSpaceFile = "flextron.json";

// Neurons for fraction f of `full`: round(f * full) to a multiple of `multiple`, within
// [multiple, full]; f = 1 is exactly `full`. KV groups: round(f * full), at least 1.
int64_t mlp_width_for_fraction(double fraction, int64_t full, int64_t multiple);
int64_t kv_groups_for_fraction(double fraction, int64_t full);

ElasticSpace default_elastic_space(const ModelConfig& config,
                                   const ElasticSpaceOptions& options = {});

// Throws flextron::Error naming `where` if the space disagrees with the model (layer count,
// widths outside [1, full], the full width missing, unsorted or repeated entries).
void check_elastic_space(const ElasticSpace& space, const ModelConfig& config,
                         const std::string& where);

nlohmann::json elastic_space_to_json(const ElasticSpace& space);
ElasticSpace elastic_space_from_json(const nlohmann::json& j, const ModelConfig& config,
                                     const std::string& where);

// dir/flextron.json checked against `config`, or the default space when the file is absent.
ElasticSpace load_elastic_space(const std::filesystem::path& dir, const ModelConfig& config);
void save_elastic_space(const std::filesystem::path& dir, const ElasticSpace& space);

// The widest (every layer's last choice) and the narrowest (every first) architecture.
Architecture widest_architecture(const ElasticSpace& space);
Architecture narrowest_architecture(const ElasticSpace& space);

// "40, 64, 88": a width list as errors and tables print it.
std::string format_widths(const std::vector<int64_t>& widths);

// Throws flextron::Error naming the layer and the allowed widths if `arch` leaves the space.
void check_in_space(const Architecture& arch, const ElasticSpace& space, const ModelConfig& config,
                    const std::string& where);

// Parses any of the text forms above (a path to an existing .json file is read as a file) and
// checks the result against the space.
Architecture parse_architecture(const std::string& text, const ModelConfig& config,
                                const ElasticSpace& space);

nlohmann::json architecture_to_json(const Architecture& arch);
Architecture architecture_from_json(const nlohmann::json& j, const std::string& where);

// "mlp 88/172 (51%), attn 2/4" when uniform, else per-layer lists: for logs and tables.
std::string describe_architecture(const Architecture& arch, const ModelConfig& config);

// Multiply-accumulates per token of a forward at `arch` with `context` positions attended
// (weights of every linear layer, attention scores and values, the LM head): the cost model the
// benchmarks compare measured time against.
double forward_macs_per_token(const ModelConfig& config, const Architecture& arch, int64_t context);

}  // namespace flextron::model
