#include "model/elastic_space.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"

namespace flextron::model {

namespace {

constexpr int kSpaceVersion = 1;

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, sep)) parts.push_back(part);
  if (!text.empty() && text.back() == sep) parts.emplace_back();
  return parts;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// A width as typed: a fraction in (0, 1] or a whole unit count > 1.
struct TypedWidth {
  double value = 1.0;
  bool fraction = true;
};

TypedWidth parse_width(const std::string& raw, const std::string& where) {
  const std::string s = trim(raw);
  size_t used = 0;
  double v = 0.0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || !std::isfinite(v))
    fail(where, "width \"" + raw + "\" is not a number");
  if (v <= 0.0) fail(where, "width " + s + " must be positive");
  if (v <= 1.0) return {v, true};
  if (v != std::floor(v))
    fail(where, "width " + s + " is neither a fraction in (0, 1] nor a whole number of units");
  // Beyond 2^31 units no layer is that wide, and the count would not convert exactly.
  if (v > 2147483648.0) fail(where, "width " + s + " units is more than any layer has");
  return {v, false};
}

int64_t resolve_width(const TypedWidth& w, bool mlp, int64_t full, int64_t multiple) {
  if (!w.fraction) return static_cast<int64_t>(w.value);
  return mlp ? mlp_width_for_fraction(w.value, full, multiple)
             : kv_groups_for_fraction(w.value, full);
}

void check_sorted_widths(const std::vector<int64_t>& widths, int64_t full, const std::string& what,
                         const std::string& where) {
  if (widths.empty()) fail(where, what + " has no widths");
  for (size_t i = 0; i < widths.size(); ++i) {
    if (widths[i] < 1 || widths[i] > full)
      fail(where, what + " width " + std::to_string(widths[i]) + " outside [1, " +
                      std::to_string(full) + "] (the weights' size)");
    if (i > 0 && widths[i] <= widths[i - 1])
      fail(where, what + " widths must be strictly ascending, got " + format_widths(widths));
  }
  if (widths.back() != full)
    fail(where, what + " must include the full width " + std::to_string(full) + ", got " +
                    format_widths(widths));
}

std::vector<int64_t> int_list(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) fail(where, "must be a list of integers, got " + j.dump());
  std::vector<int64_t> out;
  for (const auto& v : j) {
    if (!v.is_number_integer()) fail(where, "must hold integers, got " + v.dump());
    out.push_back(v.get<int64_t>());
  }
  return out;
}

// Per-layer lists, or one list for every layer.
std::vector<std::vector<int64_t>> per_layer_lists(const nlohmann::json& j, int64_t layers,
                                                  const std::string& where) {
  if (!j.is_array() || j.empty()) fail(where, "must be a non-empty list");
  if (!j[0].is_array()) return std::vector<std::vector<int64_t>>(layers, int_list(j, where));
  std::vector<std::vector<int64_t>> out;
  for (size_t l = 0; l < j.size(); ++l)
    out.push_back(int_list(j[l], where + "[" + std::to_string(l) + "]"));
  return out;
}

}  // namespace

std::string format_widths(const std::vector<int64_t>& widths) {
  std::string s;
  for (size_t i = 0; i < widths.size(); ++i) s += (i ? ", " : "") + std::to_string(widths[i]);
  return s;
}

int64_t mlp_width_for_fraction(double fraction, int64_t full, int64_t multiple) {
  if (fraction >= 1.0 || multiple >= full) return full;
  const double units = fraction * static_cast<double>(full) / static_cast<double>(multiple);
  const int64_t rounded = std::max<int64_t>(1, std::llround(units)) * multiple;
  return std::min(rounded, full);
}

int64_t kv_groups_for_fraction(double fraction, int64_t full) {
  if (fraction >= 1.0) return full;
  return std::clamp<int64_t>(std::llround(fraction * static_cast<double>(full)), 1, full);
}

ElasticSpace default_elastic_space(const ModelConfig& config, const ElasticSpaceOptions& options) {
  for (double f : options.mlp_fractions)
    if (!(f > 0.0 && f <= 1.0))
      fail("elastic space", "MLP fraction " + std::to_string(f) + " outside (0, 1]");
  for (double f : options.attn_fractions)
    if (!(f > 0.0 && f <= 1.0))
      fail("elastic space", "attention fraction " + std::to_string(f) + " outside (0, 1]");
  if (options.mlp_multiple < 0) fail("elastic space", "the MLP multiple must be positive");
  ElasticSpace space;
  int64_t widest = 0;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    widest = std::max(widest, config.layer_mlp(l));
  space.mlp_multiple = options.mlp_multiple > 0 ? options.mlp_multiple : (widest >= 1024 ? 16 : 8);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    std::vector<int64_t> mlp{config.layer_mlp(l)}, kv{config.layer_kv_heads(l)};
    for (double f : options.mlp_fractions)
      mlp.push_back(mlp_width_for_fraction(f, config.layer_mlp(l), space.mlp_multiple));
    for (double f : options.attn_fractions)
      kv.push_back(kv_groups_for_fraction(f, config.layer_kv_heads(l)));
    for (auto* list : {&mlp, &kv}) {
      std::sort(list->begin(), list->end());
      list->erase(std::unique(list->begin(), list->end()), list->end());
    }
    space.mlp.push_back(mlp);
    space.kv_groups.push_back(kv);
  }
  return space;
}

void check_elastic_space(const ElasticSpace& space, const ModelConfig& config,
                         const std::string& where) {
  const auto layers = static_cast<size_t>(config.num_hidden_layers);
  if (space.mlp.size() != layers || space.kv_groups.size() != layers)
    fail(where, "elastic space lists " + std::to_string(space.mlp.size()) + " MLP and " +
                    std::to_string(space.kv_groups.size()) + " attention layers, the model has " +
                    std::to_string(layers));
  if (space.mlp_multiple < 1) fail(where, "mlp_multiple must be positive");
  for (size_t l = 0; l < layers; ++l) {
    const auto i = static_cast<int64_t>(l);
    check_sorted_widths(space.mlp[l], config.layer_mlp(i), "layer " + std::to_string(l) + " MLP",
                        where);
    check_sorted_widths(space.kv_groups[l], config.layer_kv_heads(i),
                        "layer " + std::to_string(l) + " attention (KV groups)", where);
  }
}

nlohmann::json elastic_space_to_json(const ElasticSpace& space) {
  return {{"format", "flextron-elastic-space"},
          {"version", kSpaceVersion},
          {"ranked", space.ranked},
          {"mlp_multiple", space.mlp_multiple},
          {"mlp_widths", space.mlp},
          {"attention_kv_groups", space.kv_groups}};
}

ElasticSpace elastic_space_from_json(const nlohmann::json& j, const ModelConfig& config,
                                     const std::string& where) {
  if (!j.is_object()) fail(where, "must be a JSON object");
  // Compared as JSON: a "format" that is not a string is as wrong as another string.
  if (!j.contains("format") || j["format"] != "flextron-elastic-space")
    fail(where, "\"format\" must be \"flextron-elastic-space\"");
  if (!j.contains("version") || !j["version"].is_number_integer() ||
      j["version"].get<int>() != kSpaceVersion)
    fail(where, "unsupported \"version\" (this build reads version " +
                    std::to_string(kSpaceVersion) + ")");
  for (const char* key : {"mlp_widths", "attention_kv_groups"})
    if (!j.contains(key)) fail(where, std::string("missing field \"") + key + "\"");
  ElasticSpace space;
  space.mlp = per_layer_lists(j["mlp_widths"], config.num_hidden_layers, where + ": mlp_widths");
  space.kv_groups = per_layer_lists(j["attention_kv_groups"], config.num_hidden_layers,
                                    where + ": attention_kv_groups");
  if (j.contains("mlp_multiple")) {
    if (!j["mlp_multiple"].is_number_integer()) fail(where, "\"mlp_multiple\" must be an integer");
    space.mlp_multiple = j["mlp_multiple"].get<int64_t>();
  }
  if (j.contains("ranked")) {
    if (!j["ranked"].is_boolean()) fail(where, "\"ranked\" must be true or false");
    space.ranked = j["ranked"].get<bool>();
  }
  check_elastic_space(space, config, where);
  return space;
}

ElasticSpace load_elastic_space(const std::filesystem::path& dir, const ModelConfig& config) {
  const auto path = dir / kElasticSpaceFile;
  if (!std::filesystem::exists(path)) return default_elastic_space(config);
  return elastic_space_from_json(io::read_json_file(path), config, path.string());
}

void save_elastic_space(const std::filesystem::path& dir, const ElasticSpace& space) {
  io::write_text_atomically(dir / kElasticSpaceFile, elastic_space_to_json(space).dump(2) + "\n");
}

void check_in_space(const Architecture& arch, const ElasticSpace& space, const ModelConfig& config,
                    const std::string& where) {
  check_architecture(config, arch, where);
  for (size_t l = 0; l < arch.size(); ++l) {
    const auto& allowed_mlp = space.mlp[l];
    const auto& allowed_kv = space.kv_groups[l];
    if (std::find(allowed_mlp.begin(), allowed_mlp.end(), arch[l].mlp) == allowed_mlp.end())
      fail(where, "layer " + std::to_string(l) + ": MLP width " + std::to_string(arch[l].mlp) +
                      " is not in the elastic space (allowed: " + format_widths(allowed_mlp) + ")");
    if (std::find(allowed_kv.begin(), allowed_kv.end(), arch[l].kv_groups) == allowed_kv.end())
      fail(where,
           "layer " + std::to_string(l) + ": attention width " + std::to_string(arch[l].kv_groups) +
               " KV groups is not in the elastic space (allowed: " + format_widths(allowed_kv) +
               ")");
  }
}

Architecture parse_architecture(const std::string& text, const ModelConfig& config,
                                const ElasticSpace& space) {
  const std::string where = "architecture \"" + text + "\"";
  const int64_t layers = config.num_hidden_layers;
  Architecture arch = full_architecture(config);

  const bool is_file = text.size() > 5 && text.substr(text.size() - 5) == ".json";
  if (is_file || std::filesystem::is_regular_file(text)) {
    arch = architecture_from_json(io::read_json_file(text), text);
    check_in_space(arch, space, config, text);
    return arch;
  }

  auto apply = [&](const std::string& kind, int64_t l, const TypedWidth& w) {
    if (kind == "mlp") {
      arch[l].mlp = resolve_width(w, true, config.layer_mlp(l), space.mlp_multiple);
    } else if (kind == "attn") {
      arch[l].kv_groups = resolve_width(w, false, config.layer_kv_heads(l), 0);
    } else {
      fail(where, "unknown kind \"" + kind + "\" (use mlp or attn)");
    }
  };

  if (text.find(':') != std::string::npos) {  // per layer: "mlp:a,b,...;attn:c,d,..."
    for (const auto& part : split(text, ';')) {
      const auto colon = part.find(':');
      if (colon == std::string::npos)
        fail(where, "expected kind:w1,w2,... per layer, got \"" + part + "\"");
      const std::string kind = trim(part.substr(0, colon));
      const auto values = split(part.substr(colon + 1), ',');
      if (static_cast<int64_t>(values.size()) != layers)
        fail(where, kind + " lists " + std::to_string(values.size()) + " widths, the model has " +
                        std::to_string(layers) + " layers");
      for (int64_t l = 0; l < layers; ++l) apply(kind, l, parse_width(values[l], where));
    }
  } else if (text.find('=') != std::string::npos) {  // uniform: "mlp=0.5,attn=0.75"
    for (const auto& part : split(text, ',')) {
      const auto eq = part.find('=');
      if (eq == std::string::npos) fail(where, "expected kind=width, got \"" + part + "\"");
      const auto w = parse_width(part.substr(eq + 1), where);
      for (int64_t l = 0; l < layers; ++l) apply(trim(part.substr(0, eq)), l, w);
    }
  } else {
    fail(where, "expected \"mlp=F,attn=F\", \"mlp:F1,F2,...;attn:F1,F2,...\" or a .json file");
  }
  check_in_space(arch, space, config, where);
  return arch;
}

nlohmann::json architecture_to_json(const Architecture& arch) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& w : arch) layers.push_back({{"mlp", w.mlp}, {"kv_groups", w.kv_groups}});
  return {{"layers", layers}};
}

Architecture architecture_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("layers") || !j["layers"].is_array())
    fail(where, "an architecture is {\"layers\": [{\"mlp\": N, \"kv_groups\": G}, ...]}");
  Architecture arch;
  for (size_t l = 0; l < j["layers"].size(); ++l) {
    const auto& e = j["layers"][l];
    const std::string at = where + ": layers[" + std::to_string(l) + "]";
    if (!e.is_object()) fail(at, "must be an object");
    for (const char* key : {"mlp", "kv_groups"})
      if (!e.contains(key) || !e[key].is_number_integer())
        fail(at, std::string("needs an integer \"") + key + "\"");
    arch.push_back({e["mlp"].get<int64_t>(), e["kv_groups"].get<int64_t>()});
  }
  return arch;
}

std::string describe_architecture(const Architecture& arch, const ModelConfig& config) {
  if (arch.empty()) return "full";
  const bool uniform = is_uniform(arch) && !config.heterogeneous();
  char buf[160];
  if (uniform) {
    std::snprintf(
        buf, sizeof(buf), "mlp %lld/%lld (%.0f%%), attn %lld/%lld KV groups",
        static_cast<long long>(arch[0].mlp), static_cast<long long>(config.intermediate_size),
        100.0 * static_cast<double>(arch[0].mlp) / static_cast<double>(config.intermediate_size),
        static_cast<long long>(arch[0].kv_groups),
        static_cast<long long>(config.num_key_value_heads));
    return buf;
  }
  std::vector<int64_t> mlp, kv;
  for (const auto& w : arch) {
    mlp.push_back(w.mlp);
    kv.push_back(w.kv_groups);
  }
  return "mlp [" + format_widths(mlp) + "], attn [" + format_widths(kv) + "]";
}

double forward_macs_per_token(const ModelConfig& config, const Architecture& arch,
                              int64_t context) {
  const Architecture& a = arch.empty() ? full_architecture(config) : arch;
  const double d = static_cast<double>(config.hidden_size);
  const double hd = static_cast<double>(config.head_dim());
  const double rep = static_cast<double>(config.group_size());
  const double gated = config.family == Family::Llama ? 3.0 : 2.0;
  double macs = d * static_cast<double>(config.vocab_size);  // LM head
  for (const auto& w : a) {
    const double kv_dim = static_cast<double>(w.kv_groups) * hd;
    const double q_dim = kv_dim * rep;
    macs += d * (2 * q_dim + 2 * kv_dim);                // q, o and k, v projections
    macs += 2.0 * q_dim * static_cast<double>(context);  // scores and weighted values
    macs += gated * d * static_cast<double>(w.mlp);      // gate/up and down
  }
  return macs;
}

Architecture widest_architecture(const ElasticSpace& space) {
  Architecture arch;
  for (size_t l = 0; l < space.mlp.size(); ++l)
    arch.push_back({space.mlp[l].back(), space.kv_groups[l].back()});
  return arch;
}

Architecture narrowest_architecture(const ElasticSpace& space) {
  Architecture arch;
  for (size_t l = 0; l < space.mlp.size(); ++l)
    arch.push_back({space.mlp[l].front(), space.kv_groups[l].front()});
  return arch;
}

}  // namespace flextron::model
