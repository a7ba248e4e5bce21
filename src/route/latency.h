// The latency lookup table (FLEXTRON.md section 4): measured on this machine, for every layer and
// every width choice of the elastic space, the time of that layer's attention half and MLP half
// per token, at decode (batch B, a few context lengths) and at prefill, plus the fixed cost of a
// forward (embedding, final norm, LM head and the per-call overhead). An architecture's decode
// latency at context c is predicted as fixed(c) + scale(c) * sum over layers of its two entries.
// fixed(c), scale(c) and bytes(c) are calibrated by least squares on whole architectures measured
// end to end:
//   decode_ms(arch, c) = fixed(c) + scale(c) * sum of entries(c) + bytes(c) * MiB of weights read
// A block timed alone keeps its weights in cache; inside a full forward it competes with every
// other layer's, and once the model outgrows the caches each step streams its weights from
// memory, so in-situ cost grows with the bytes a sub-network touches.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/elastic_space.h"
#include "model/transformer.h"

namespace flextron::route {

inline constexpr const char* kLatencyFile = "latency.json";

struct ProfileOptions {
  std::vector<int64_t> contexts{128, 512};  // decode context lengths; clipped to the model's
  int64_t batch = 1;
  int64_t prefill_tokens = 128;  // prompt length timed for prefill (clipped to the context)
  int64_t warmup = 5;
  int64_t repeats = 25;                    // the median of these is stored
  int64_t calibration_architectures = 16;  // whole forwards measured per context for the fit
  int64_t rounds = 3;  // each whole forward measured in interleaved rounds, median (core/timing.h)
};

struct LatencyTable {
  nlohmann::json model;     // the model's shape and elastic space: a table is for one model
  nlohmann::json hardware;  // CPU, threads, device, LibTorch version
  std::vector<int64_t> contexts;
  int64_t batch = 1;
  int64_t prefill_tokens = 0;
  std::vector<std::vector<int64_t>> mlp_widths;  // [layer][choice], as in the elastic space
  std::vector<std::vector<int64_t>> kv_groups;
  // Milliseconds per decode step (one token per sequence) by context; per token at prefill.
  std::vector<double> fixed_decode_ms;    // [context]
  std::vector<double> decode_scale;       // [context], multiplies layers
  std::vector<double> decode_ms_per_mib;  // [context], multiplies the MiB of layer weights read
  double head_decode_ms = 0.0;            // embedding + final norm + LM head alone (part of fixed)
  double fixed_prefill_ms = 0.0;          // per prompt token
  std::vector<std::vector<double>> mlp_decode_ms;                // [layer][choice]
  std::vector<std::vector<double>> mlp_prefill_ms;               // [layer][choice]
  std::vector<std::vector<std::vector<double>>> attn_decode_ms;  // [layer][choice][context]
  std::vector<std::vector<double>> attn_prefill_ms;              // [layer][choice]
  std::vector<std::vector<double>> mlp_mib;                      // [layer][choice], weights
  std::vector<std::vector<double>> attn_mib;                     // [layer][choice], weights

  // Predicted decode milliseconds per step at `context` (linear between profiled contexts,
  // clamped at the ends) or, without a context, averaged over the profiled contexts: the
  // reference latency that budgets are fractions of. Empty arch = full model.
  double decode_ms(const model::Architecture& arch, int64_t context) const;
  double decode_ms(const model::Architecture& arch) const;
  // The block entries alone at `context`: head_decode_ms plus the chosen entries, no calibration.
  double uncalibrated_decode_ms(const model::Architecture& arch, int64_t context) const;
  double prefill_ms_per_token(const model::Architecture& arch) const;

  // The reference decode cost split the way routers need it: fixed, and per layer and choice.
  double fixed_ms() const;
  std::vector<std::vector<double>> mlp_ms() const;   // [layer][choice]
  std::vector<std::vector<double>> attn_ms() const;  // [layer][choice], mean over contexts

  // What the prediction is linear in, at one context: the sum of the chosen entries and the MiB
  // of layer weights they read.
  struct Features {
    double entries_ms = 0.0;
    double mib = 0.0;
  };
  Features features(const model::Architecture& arch, int64_t context) const;

  // Index of `width` among layer l's choices; throws naming the layer if it is not one.
  int64_t mlp_choice(int64_t layer, int64_t width) const;
  int64_t attn_choice(int64_t layer, int64_t groups) const;

 private:
  std::vector<std::pair<size_t, size_t>> entries(const model::Architecture& arch) const;
};

// The calibration fit at one context: measured ~ fixed + scale * entries_ms + per_mib * mib, by
// least squares with every coefficient physical (fixed >= min_fixed, the embedding and head
// alone; scale, per_mib >= 0). Where the joint fit breaks a bound, the better of the two
// one-feature fits is kept.
struct LatencyFit {
  double fixed = 0.0, scale = 1.0, per_mib = 0.0;
  double residual = 0.0;  // sum of squared errors, ms^2
};
LatencyFit fit_latency_model(const std::vector<LatencyTable::Features>& x,
                             const std::vector<double>& y, double min_fixed);

// What the table records about a model; two models with the same description share a table.
nlohmann::json describe_model(const model::ModelConfig& config, const model::ElasticSpace& space);
nlohmann::json describe_hardware(const model::TransformerImpl& model);

// Median milliseconds of one decode step of `arch` at `context` positions already cached,
// measured end to end through the model's forward (what the table must predict). With a router,
// the router chooses the widths instead of `arch` (and its own cost is part of the step).
double measure_decode_ms(model::TransformerImpl& model, const model::Architecture& arch,
                         int64_t context, int64_t batch, int64_t warmup, int64_t repeats,
                         model::LayerRouter* router = nullptr);

// What the table predicts: one whole decode step of an architecture at a context, end to end, on
// the runtime that will serve it (the torch forward above, or the fast runtime's engine:
// runtime/engine_timing.h). The block entries are always timed on the torch modules; the
// calibration fit and the check measure through this, so a table is calibrated for its runtime,
// whose name the table records (hardware.runtime).
struct DecodeTimer {
  std::string runtime = "torch";
  std::string weights = "f32";  // the weight format it times (runtime/quant_kernels.h)
  std::function<double(const model::Architecture& arch, int64_t context)> step_ms;
  // The embedding and LM head alone on this runtime, the fit's lower bound on the fixed cost;
  // where a runtime cannot time them apart (the fast engine runs a whole pass), 0.
  std::function<double()> head_ms;
};
// measure_decode_ms on `model` at the options' batch, warmup and repeats.
DecodeTimer torch_decode_timer(model::TransformerImpl& model, const ProfileOptions& options);

// Measures the table; the calibration measures through `timer` (default: torch_decode_timer).
// progress(done, total) is called after every timed entry.
LatencyTable profile_latency(model::TransformerImpl& model, const model::ElasticSpace& space,
                             const ProfileOptions& options,
                             const std::function<void(int64_t, int64_t)>& progress = {},
                             const DecodeTimer& timer = {});

// One architecture measured end to end beside the table's prediction.
// uncalibrated_ms: what the block entries alone predict (embedding and head plus the isolated
// block timings, no fit), to show what the calibration buys.
struct LatencyCheck {
  model::Architecture arch;
  int64_t context = 0;
  double predicted_ms = 0.0;
  double uncalibrated_ms = 0.0;
  double measured_ms = 0.0;
  double relative_error() const { return std::abs(predicted_ms - measured_ms) / measured_ms; }
  double uncalibrated_error() const {
    return std::abs(uncalibrated_ms - measured_ms) / measured_ms;
  }
};

// `count` architectures spread over the space (route/surrogate.h), each at the next profiled
// context in turn, predicted and measured through `timer` (its median, then the median of
// `rounds` interleaved measurements).
std::vector<LatencyCheck> check_latency_table(const LatencyTable& table,
                                              const model::ElasticSpace& space, int64_t count,
                                              uint64_t seed, const DecodeTimer& timer,
                                              int64_t rounds = 3);

nlohmann::json latency_table_to_json(const LatencyTable& table);
// Throws flextron::Error naming `where` for a malformed table.
LatencyTable latency_table_from_json(const nlohmann::json& j, const std::string& where);

void save_latency_table(const std::filesystem::path& file, const LatencyTable& table);
// Reads `file` and checks that it was measured for this model and space (same shape, same width
// choices); a table from another model is an error naming the file and the difference.
LatencyTable load_latency_table(const std::filesystem::path& file, const model::ModelConfig& config,
                                const model::ElasticSpace& space);

}  // namespace flextron::route
