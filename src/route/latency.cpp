#include "route/latency.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <tuple>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include "core/error.h"
#include "core/timing.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "model/extract.h"
#include "route/surrogate.h"

namespace flextron::route {

using model::Architecture;

namespace {

// Linear interpolation of values[i] (measured at xs[i], ascending) at x, clamped at the ends.
double interpolate(const std::vector<int64_t>& xs, const std::vector<double>& values, int64_t x) {
  if (x <= xs.front()) return values.front();
  if (x >= xs.back()) return values.back();
  size_t i = 1;
  while (xs[i] < x) ++i;
  const double t = static_cast<double>(x - xs[i - 1]) / static_cast<double>(xs[i] - xs[i - 1]);
  return values[i - 1] + t * (values[i] - values[i - 1]);
}

double mean(const std::vector<double>& values) {
  double sum = 0.0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

int64_t choice_index(const std::vector<int64_t>& choices, int64_t value, int64_t layer,
                     const char* what) {
  auto it = std::find(choices.begin(), choices.end(), value);
  if (it == choices.end())
    fail("latency table",
         std::string(what) + " " + std::to_string(value) + " at layer " + std::to_string(layer) +
             " was not profiled (profiled: " + model::format_widths(choices) + ")");
  return it - choices.begin();
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Prediction

// Per layer, the (MLP, attention) entry indices of `arch` (empty: the full widths).
std::vector<std::pair<size_t, size_t>> LatencyTable::entries(const Architecture& arch) const {
  std::vector<std::pair<size_t, size_t>> out;
  for (size_t l = 0; l < mlp_widths.size(); ++l) {
    const auto layer = static_cast<int64_t>(l);
    if (arch.empty()) {
      out.emplace_back(mlp_widths[l].size() - 1, kv_groups[l].size() - 1);
    } else {
      out.emplace_back(static_cast<size_t>(mlp_choice(layer, arch[l].mlp)),
                       static_cast<size_t>(attn_choice(layer, arch[l].kv_groups)));
    }
  }
  return out;
}

LatencyTable::Features LatencyTable::features(const Architecture& arch, int64_t context) const {
  Features f;
  const auto chosen = entries(arch);
  for (size_t l = 0; l < chosen.size(); ++l) {
    const auto [m, a] = chosen[l];
    f.entries_ms += mlp_decode_ms[l][m] + interpolate(contexts, attn_decode_ms[l][a], context);
    if (!mlp_mib.empty()) f.mib += mlp_mib[l][m] + attn_mib[l][a];
  }
  return f;
}

double LatencyTable::decode_ms(const Architecture& arch, int64_t context) const {
  const auto f = features(arch, context);
  return interpolate(contexts, fixed_decode_ms, context) +
         interpolate(contexts, decode_scale, context) * f.entries_ms +
         (decode_ms_per_mib.empty() ? 0.0 : interpolate(contexts, decode_ms_per_mib, context)) *
             f.mib;
}

double LatencyTable::uncalibrated_decode_ms(const Architecture& arch, int64_t context) const {
  return head_decode_ms + features(arch, context).entries_ms;
}

double LatencyTable::decode_ms(const Architecture& arch) const {
  std::vector<double> per_context;
  for (int64_t c : contexts) per_context.push_back(decode_ms(arch, c));
  return mean(per_context);
}

double LatencyTable::prefill_ms_per_token(const Architecture& arch) const {
  double total = fixed_prefill_ms;
  const auto chosen = entries(arch);
  for (size_t l = 0; l < chosen.size(); ++l) {
    const auto [m, a] = chosen[l];
    total += mlp_prefill_ms[l][m] + attn_prefill_ms[l][a];
  }
  return total;
}

double LatencyTable::fixed_ms() const {
  return mean(fixed_decode_ms);
}

// decode_ms(arch) = mean_c [fixed(c) + scale(c) * sum of entries(c) + per_mib(c) * MiB]: split
// into the parts.
std::vector<std::vector<double>> LatencyTable::mlp_ms() const {
  const double scale = mean(decode_scale),
               per_mib = decode_ms_per_mib.empty() ? 0.0 : mean(decode_ms_per_mib);
  auto out = mlp_decode_ms;
  for (size_t l = 0; l < out.size(); ++l)
    for (size_t c = 0; c < out[l].size(); ++c)
      out[l][c] = out[l][c] * scale + (mlp_mib.empty() ? 0.0 : per_mib * mlp_mib[l][c]);
  return out;
}

std::vector<std::vector<double>> LatencyTable::attn_ms() const {
  const double per_mib = decode_ms_per_mib.empty() ? 0.0 : mean(decode_ms_per_mib);
  std::vector<std::vector<double>> out(attn_decode_ms.size());
  for (size_t l = 0; l < attn_decode_ms.size(); ++l) {
    for (size_t a = 0; a < attn_decode_ms[l].size(); ++a) {
      const auto& by_context = attn_decode_ms[l][a];
      std::vector<double> scaled;
      for (size_t c = 0; c < by_context.size(); ++c)
        scaled.push_back(by_context[c] * decode_scale[c]);
      out[l].push_back(mean(scaled) + (attn_mib.empty() ? 0.0 : per_mib * attn_mib[l][a]));
    }
  }
  return out;
}

int64_t LatencyTable::mlp_choice(int64_t layer, int64_t width) const {
  return choice_index(mlp_widths[static_cast<size_t>(layer)], width, layer, "MLP width");
}

int64_t LatencyTable::attn_choice(int64_t layer, int64_t groups) const {
  return choice_index(kv_groups[static_cast<size_t>(layer)], groups, layer, "KV group count");
}

// ---------------------------------------------------------------------------------------------
// Description

nlohmann::json describe_model(const model::ModelConfig& config, const model::ElasticSpace& space) {
  return {{"hidden_size", config.hidden_size},
          {"num_hidden_layers", config.num_hidden_layers},
          {"num_attention_heads", config.num_attention_heads},
          {"head_dim", config.head_dim()},
          {"vocab_size", config.vocab_size},
          {"mlp_widths", space.mlp},
          {"kv_groups", space.kv_groups}};
}

nlohmann::json describe_hardware(const model::TransformerImpl& model) {
  return {{"cpu", cpu_model_name()},
          {"threads", at::get_num_threads()},
          {"device", model.device().str()},
          {"dtype", std::string(c10::toString(model.dtype()))},
          {"libtorch", TORCH_VERSION}};
}

// ---------------------------------------------------------------------------------------------
// Calibration fit

namespace {

// Least squares of y on the columns of x (plus nothing else: callers add the constant column),
// through the normal equations; false when they are singular.
bool least_squares(const std::vector<std::vector<double>>& x, const std::vector<double>& y,
                   std::vector<double>& beta) {
  const size_t k = x.empty() ? 0 : x[0].size();
  std::vector<std::vector<double>> a(k, std::vector<double>(k + 1, 0.0));
  for (size_t r = 0; r < x.size(); ++r)
    for (size_t i = 0; i < k; ++i) {
      for (size_t j = 0; j < k; ++j) a[i][j] += x[r][i] * x[r][j];
      a[i][k] += x[r][i] * y[r];
    }
  // Gaussian elimination with partial pivoting on the k x k system.
  for (size_t c = 0; c < k; ++c) {
    size_t pivot = c;
    for (size_t r = c + 1; r < k; ++r)
      if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
    if (std::abs(a[pivot][c]) < 1e-12 * std::max(1.0, std::abs(a[c][c]))) return false;
    std::swap(a[c], a[pivot]);
    for (size_t r = 0; r < k; ++r) {
      if (r == c) continue;
      const double f = a[r][c] / a[c][c];
      for (size_t j = c; j <= k; ++j) a[r][j] -= f * a[c][j];
    }
  }
  beta.assign(k, 0.0);
  for (size_t i = 0; i < k; ++i) beta[i] = a[i][k] / a[i][i];
  return true;
}

double residual(const LatencyFit& f, const std::vector<LatencyTable::Features>& x,
                const std::vector<double>& y) {
  double sum = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = f.fixed + f.scale * x[i].entries_ms + f.per_mib * x[i].mib - y[i];
    sum += e * e;
  }
  return sum;
}

// y ~ fixed + slope * feature with fixed >= min_fixed (else pinned there and the slope refitted);
// slope >= 0.
std::pair<double, double> fit_one(const std::vector<double>& feature, const std::vector<double>& y,
                                  double min_fixed) {
  std::vector<std::vector<double>> x;
  for (double v : feature) x.push_back({1.0, v});
  std::vector<double> beta;
  if (least_squares(x, y, beta) && beta[0] >= min_fixed && beta[1] >= 0.0)
    return {beta[0], beta[1]};
  double sxy = 0.0, sxx = 0.0;
  for (size_t i = 0; i < y.size(); ++i)
    sxy += feature[i] * (y[i] - min_fixed), sxx += feature[i] * feature[i];
  return {min_fixed, sxx > 0.0 ? std::max(0.0, sxy / sxx) : 0.0};
}

}  // namespace

LatencyFit fit_latency_model(const std::vector<LatencyTable::Features>& x,
                             const std::vector<double>& y, double min_fixed) {
  if (x.size() != y.size() || x.size() < 2) fail("latency", "the fit needs two measurements");
  std::vector<LatencyFit> candidates;
  std::vector<std::vector<double>> rows;
  for (const auto& f : x) rows.push_back({1.0, f.entries_ms, f.mib});
  std::vector<double> beta;
  if (x.size() >= 3 && least_squares(rows, y, beta) && beta[0] >= min_fixed && beta[1] >= 0.0 &&
      beta[2] >= 0.0)
    candidates.push_back({beta[0], beta[1], beta[2]});
  std::vector<double> entries, mib;
  for (const auto& f : x) entries.push_back(f.entries_ms), mib.push_back(f.mib);
  const auto [fixed_e, scale] = fit_one(entries, y, min_fixed);
  candidates.push_back({fixed_e, scale, 0.0});
  if (std::any_of(mib.begin(), mib.end(), [](double v) { return v > 0.0; })) {
    const auto [fixed_b, per_mib] = fit_one(mib, y, min_fixed);
    candidates.push_back({fixed_b, 0.0, per_mib});
  }
  for (auto& c : candidates) c.residual = residual(c, x, y);
  return *std::min_element(
      candidates.begin(), candidates.end(),
      [](const LatencyFit& a, const LatencyFit& b) { return a.residual < b.residual; });
}

// ---------------------------------------------------------------------------------------------
// Measurement

double measure_decode_ms(model::TransformerImpl& model, const Architecture& arch, int64_t context,
                         int64_t batch, int64_t warmup, int64_t repeats,
                         model::LayerRouter* router) {
  c10::InferenceMode guard;
  const auto& config = model.config();
  if (context < 0 || context + 1 > config.max_position_embeddings)
    fail("latency", "context " + std::to_string(context) + " outside [0, " +
                        std::to_string(config.max_position_embeddings - 1) + "]");
  auto ids = torch::TensorOptions().dtype(torch::kLong).device(model.device());
  auto cache = model.make_cache(batch, context + 1, &arch, /*lazy=*/router != nullptr);
  if (context > 0)
    model.forward(torch::randint(config.vocab_size, {batch, context}, ids), &cache, &arch, router);
  auto token = torch::randint(config.vocab_size, {batch, 1}, ids);
  auto step = [&] {
    cache.length = context;
    model.forward(token, &cache, &arch, router);
  };
  return median(time_calls_ms(step, warmup, repeats, model.device()));
}

DecodeTimer torch_decode_timer(model::TransformerImpl& model, const ProfileOptions& options) {
  DecodeTimer timer;
  timer.step_ms = [&model, options](const Architecture& arch, int64_t context) {
    return measure_decode_ms(model, arch, context, options.batch, options.warmup, options.repeats);
  };
  timer.head_ms = [&model, options] {
    c10::InferenceMode guard;
    auto tokens = torch::randint(model.config().vocab_size, {options.batch, 1},
                                 torch::TensorOptions().dtype(torch::kLong).device(model.device()));
    return median(time_calls_ms([&] { model.head(model.embed(tokens)); }, options.warmup,
                                options.repeats, model.device()));
  };
  return timer;
}

LatencyTable profile_latency(model::TransformerImpl& model, const model::ElasticSpace& space,
                             const ProfileOptions& options,
                             const std::function<void(int64_t, int64_t)>& progress,
                             const DecodeTimer& given_timer) {
  c10::InferenceMode guard;
  const auto torch_timer = torch_decode_timer(model, options);
  const auto& timer = given_timer.step_ms ? given_timer : torch_timer;
  const auto& config = model.config();
  const int64_t max_context = config.max_position_embeddings - 1;
  if (options.batch < 1) fail("profile", "batch must be >= 1");
  if (options.repeats < 1 || options.warmup < 0) fail("profile", "repeats must be >= 1");
  LatencyTable table;
  for (int64_t c : options.contexts) {
    if (c < 1) fail("profile", "context lengths must be >= 1, got " + std::to_string(c));
    table.contexts.push_back(std::min(c, max_context));
  }
  if (table.contexts.empty()) fail("profile", "no context lengths given");
  std::sort(table.contexts.begin(), table.contexts.end());
  table.contexts.erase(std::unique(table.contexts.begin(), table.contexts.end()),
                       table.contexts.end());
  table.batch = options.batch;
  table.prefill_tokens =
      std::clamp<int64_t>(options.prefill_tokens, 1, config.max_position_embeddings);
  table.model = describe_model(config, space);
  table.hardware = describe_hardware(model);
  table.hardware["runtime"] = timer.runtime;
  table.hardware["weights"] = timer.weights;
  table.mlp_widths = space.mlp;
  table.kv_groups = space.kv_groups;
  // Weights each choice reads per token, from the parameter count of the sub-network.
  const double element_mib = static_cast<double>(c10::elementSize(model.dtype())) / (1 << 20);
  for (size_t l = 0; l < space.mlp.size(); ++l) {
    table.mlp_mib.emplace_back();
    table.attn_mib.emplace_back();
    for (int64_t width : space.mlp[l])
      table.mlp_mib.back().push_back(
          element_mib * static_cast<double>(model::layer_mlp_parameters(config, width)));
    for (int64_t groups : space.kv_groups[l])
      table.attn_mib.back().push_back(
          element_mib * static_cast<double>(model::layer_attention_parameters(config, groups)));
  }

  const int64_t batch = options.batch, prompt = table.prefill_tokens, hd = config.head_dim();
  const auto n_contexts = static_cast<int64_t>(table.contexts.size());
  const int64_t n_calibration = std::max<int64_t>(2, options.calibration_architectures);
  int64_t total = 1 + n_contexts * n_calibration * std::max<int64_t>(1, options.rounds), done = 0;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    total += static_cast<int64_t>(space.mlp[l].size() + space.kv_groups[l].size());
  auto tick = [&] {
    ++done;
    if (progress) progress(done, total);
  };
  auto timed = [&](const std::function<void()>& fn) {
    return median(time_calls_ms(fn, options.warmup, options.repeats, model.device()));
  };

  auto acts = torch::TensorOptions().dtype(model.dtype()).device(model.device());
  auto ids = torch::TensorOptions().dtype(torch::kLong).device(model.device());
  auto x1 = torch::randn({batch, 1, config.hidden_size}, acts);
  auto xp = torch::randn({batch, prompt, config.hidden_size}, acts);
  auto tokp = torch::randint(config.vocab_size, {batch, prompt}, ids);

  // Embedding + final norm + LM head.
  table.head_decode_ms = torch_timer.head_ms();
  const double min_fixed = &timer == &torch_timer ? table.head_decode_ms
                           : timer.head_ms        ? timer.head_ms()
                                                  : 0.0;
  table.fixed_prefill_ms =
      timed([&] { model.head(model.embed(tokp)); }) / static_cast<double>(prompt);
  tick();

  // Not structured bindings: the timed lambdas capture them (C++17 forbids that; GCC allows it).
  torch::Tensor prefill_cos, prefill_sin;
  std::tie(prefill_cos, prefill_sin) = model.rope(0, prompt);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    auto& layer = model.layer(l);
    std::vector<double> mlp_decode, mlp_prefill, attn_prefill;
    std::vector<std::vector<double>> attn_decode;
    for (int64_t width : space.mlp[l]) {
      mlp_decode.push_back(timed([&] { layer.mlp_block(x1, width); }));
      mlp_prefill.push_back(timed([&] { layer.mlp_block(xp, width); }) /
                            static_cast<double>(prompt));
      tick();
    }
    for (int64_t groups : space.kv_groups[l]) {
      std::vector<double> by_context;
      for (int64_t c : table.contexts) {
        // A cache already holding c positions; each timed call writes position c and attends
        // over c + 1, as a decode step does.
        auto k = torch::randn({batch, groups, c + 1, hd}, acts);
        auto v = torch::randn({batch, groups, c + 1, hd}, acts);
        torch::Tensor cos, sin;
        std::tie(cos, sin) = model.rope(c, 1);
        by_context.push_back(
            timed([&] { layer.attention_block(x1, c, groups, cos, sin, &k, &v); }));
      }
      attn_decode.push_back(by_context);
      auto k = torch::zeros({batch, groups, prompt, hd}, acts);
      auto v = torch::zeros({batch, groups, prompt, hd}, acts);
      attn_prefill.push_back(
          timed([&] { layer.attention_block(xp, 0, groups, prefill_cos, prefill_sin, &k, &v); }) /
          static_cast<double>(prompt));
      tick();
    }
    table.mlp_decode_ms.push_back(mlp_decode);
    table.mlp_prefill_ms.push_back(mlp_prefill);
    table.attn_decode_ms.push_back(attn_decode);
    table.attn_prefill_ms.push_back(attn_prefill);
  }

  // Calibration: whole forwards of the widest, the narrowest and a spread of architectures at
  // each context, and the fit of measured = fixed + scale * entries + per_mib * MiB.
  auto archs = sample_spread_architectures(space, n_calibration - 2, 97531);
  archs.push_back(model::widest_architecture(space));
  archs.push_back(model::narrowest_architecture(space));
  table.fixed_decode_ms.assign(table.contexts.size(), 0.0);
  table.decode_scale.assign(table.contexts.size(), 1.0);
  table.decode_ms_per_mib.assign(table.contexts.size(), 0.0);
  std::vector<double> fixed, scale, per_mib;
  for (int64_t c : table.contexts) {
    std::vector<LatencyTable::Features> x;
    for (const auto& arch : archs) x.push_back(table.features(arch, c));
    const auto y = interleaved_medians(archs.size(), options.rounds, [&](size_t i) {
      const double ms = timer.step_ms(archs[i], c);
      tick();
      return ms;
    });
    const auto fit = fit_latency_model(x, y, min_fixed);
    fixed.push_back(fit.fixed);
    scale.push_back(fit.scale);
    per_mib.push_back(fit.per_mib);
  }
  table.decode_ms_per_mib = per_mib;
  table.fixed_decode_ms = fixed;
  table.decode_scale = scale;
  return table;
}

std::vector<LatencyCheck> check_latency_table(const LatencyTable& table,
                                              const model::ElasticSpace& space, int64_t count,
                                              uint64_t seed, const DecodeTimer& timer,
                                              int64_t rounds) {
  std::vector<LatencyCheck> out;
  const auto archs = sample_spread_architectures(space, count, seed);
  for (size_t i = 0; i < archs.size(); ++i) {
    LatencyCheck c;
    c.arch = archs[i];
    c.context = table.contexts[i % table.contexts.size()];
    c.predicted_ms = table.decode_ms(c.arch, c.context);
    c.uncalibrated_ms = table.uncalibrated_decode_ms(c.arch, c.context);
    out.push_back(c);
  }
  const auto measured = interleaved_medians(
      out.size(), rounds, [&](size_t i) { return timer.step_ms(out[i].arch, out[i].context); });
  for (size_t i = 0; i < out.size(); ++i) out[i].measured_ms = measured[i];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files

nlohmann::json latency_table_to_json(const LatencyTable& t) {
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < t.mlp_widths.size(); ++l) {
    nlohmann::json mlp = nlohmann::json::array(), attn = nlohmann::json::array();
    for (size_t c = 0; c < t.mlp_widths[l].size(); ++c)
      mlp.push_back({{"width", t.mlp_widths[l][c]},
                     {"decode_ms", t.mlp_decode_ms[l][c]},
                     {"prefill_ms_per_token", t.mlp_prefill_ms[l][c]},
                     {"mib", t.mlp_mib.empty() ? 0.0 : t.mlp_mib[l][c]}});
    for (size_t c = 0; c < t.kv_groups[l].size(); ++c)
      attn.push_back({{"kv_groups", t.kv_groups[l][c]},
                      {"decode_ms", t.attn_decode_ms[l][c]},
                      {"prefill_ms_per_token", t.attn_prefill_ms[l][c]},
                      {"mib", t.attn_mib.empty() ? 0.0 : t.attn_mib[l][c]}});
    layers.push_back({{"mlp", mlp}, {"attention", attn}});
  }
  return {
      {"format", "flextron-latency-table"},
      {"version", 1},
      {"model", t.model},
      {"hardware", t.hardware},
      {"batch", t.batch},
      {"contexts", t.contexts},
      {"prefill_tokens", t.prefill_tokens},
      {"fixed", {{"decode_ms", t.fixed_decode_ms}, {"prefill_ms_per_token", t.fixed_prefill_ms}}},
      {"decode_scale", t.decode_scale},
      {"decode_ms_per_mib", t.decode_ms_per_mib},
      {"embedding_and_head_decode_ms", t.head_decode_ms},
      {"layers", layers}};
}

LatencyTable latency_table_from_json(const nlohmann::json& j, const std::string& where) {
  try {
    if (!j.contains("format") || j["format"] != "flextron-latency-table")
      fail(where, "not a latency table (\"format\" must be \"flextron-latency-table\")");
    if (j.at("version").get<int>() != 1)
      fail(where, "unsupported latency table version " + j.at("version").dump());
    LatencyTable t;
    t.model = j.at("model");
    t.hardware = j.at("hardware");
    t.batch = j.at("batch").get<int64_t>();
    t.contexts = j.at("contexts").get<std::vector<int64_t>>();
    t.prefill_tokens = j.at("prefill_tokens").get<int64_t>();
    t.fixed_decode_ms = j.at("fixed").at("decode_ms").get<std::vector<double>>();
    t.fixed_prefill_ms = j.at("fixed").at("prefill_ms_per_token").get<double>();
    t.decode_scale = j.at("decode_scale").get<std::vector<double>>();
    t.head_decode_ms = j.value("embedding_and_head_decode_ms", 0.0);
    // Tables written before the byte term predict with entries alone.
    t.decode_ms_per_mib = j.value("decode_ms_per_mib", std::vector<double>());
    if (t.decode_ms_per_mib.empty()) t.decode_ms_per_mib.assign(t.contexts.size(), 0.0);
    if (t.contexts.empty() || !std::is_sorted(t.contexts.begin(), t.contexts.end()) ||
        t.fixed_decode_ms.size() != t.contexts.size() ||
        t.decode_scale.size() != t.contexts.size() ||
        t.decode_ms_per_mib.size() != t.contexts.size())
      fail(where,
           "\"contexts\" must be ascending and match fixed.decode_ms, decode_scale and "
           "decode_ms_per_mib");
    for (const auto& layer : j.at("layers")) {
      std::vector<int64_t> widths, groups;
      std::vector<double> md, mp, ap, mm, am;
      std::vector<std::vector<double>> ad;
      for (const auto& e : layer.at("mlp")) {
        widths.push_back(e.at("width").get<int64_t>());
        md.push_back(e.at("decode_ms").get<double>());
        mp.push_back(e.at("prefill_ms_per_token").get<double>());
        mm.push_back(e.value("mib", 0.0));
      }
      for (const auto& e : layer.at("attention")) {
        groups.push_back(e.at("kv_groups").get<int64_t>());
        ad.push_back(e.at("decode_ms").get<std::vector<double>>());
        ap.push_back(e.at("prefill_ms_per_token").get<double>());
        am.push_back(e.value("mib", 0.0));
        if (ad.back().size() != t.contexts.size())
          fail(where, "attention decode_ms needs one entry per context");
      }
      t.mlp_widths.push_back(widths);
      t.kv_groups.push_back(groups);
      t.mlp_decode_ms.push_back(md);
      t.mlp_prefill_ms.push_back(mp);
      t.attn_decode_ms.push_back(ad);
      t.attn_prefill_ms.push_back(ap);
      t.mlp_mib.push_back(mm);
      t.attn_mib.push_back(am);
    }
    auto check_times = [&](double v) {
      if (!std::isfinite(v) || v < 0) fail(where, "latencies must be finite and >= 0");
    };
    for (double v : t.fixed_decode_ms) check_times(v);
    for (const auto& layer : t.mlp_decode_ms)
      for (double v : layer) check_times(v);
    return t;
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("malformed latency table: ") + e.what());
  }
}

void save_latency_table(const std::filesystem::path& file, const LatencyTable& table) {
  io::write_text_atomically(file, latency_table_to_json(table).dump(2) + "\n");
}

LatencyTable load_latency_table(const std::filesystem::path& file, const model::ModelConfig& config,
                                const model::ElasticSpace& space) {
  auto table = latency_table_from_json(io::read_json_file(file), file.string());
  const auto expected = describe_model(config, space);
  for (const auto& [key, value] : expected.items()) {
    if (!table.model.contains(key) || table.model[key] != value)
      fail(file.string(), "measured for another model or elastic space: \"" + key + "\" is " +
                              (table.model.contains(key) ? table.model[key].dump() : "missing") +
                              ", this model has " + value.dump() + " (run flextron profile again)");
  }
  if (table.mlp_widths != space.mlp || table.kv_groups != space.kv_groups)
    fail(file.string(), "its per-layer entries disagree with the elastic space in flextron.json");
  return table;
}

}  // namespace flextron::route
