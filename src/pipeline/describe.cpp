#include "pipeline/describe.h"

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/files.h"
#include "io/model_dir.h"
#include "model/elastic_space.h"
#include "route/budget_table.h"
#include "route/latency.h"
#include "route/router_file.h"

namespace flextron::pipeline {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A safetensors file's header alone (8-byte little-endian length, then JSON): the stored dtypes
// without reading the tensors.
json safetensors_header(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), "cannot open");
  unsigned char size_bytes[8] = {};
  in.read(reinterpret_cast<char*>(size_bytes), 8);
  uint64_t size = 0;
  for (int i = 7; i >= 0; --i) size = (size << 8) | size_bytes[i];
  if (!in || size > (uint64_t{1} << 30)) fail(path.string(), "not a safetensors file");
  std::string header(size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(size));
  if (!in) fail(path.string(), "truncated safetensors header");
  try {
    return json::parse(header);
  } catch (const json::exception& e) {
    fail(path.string(), std::string("safetensors header is not JSON: ") + e.what());
  }
}

json describe_weights(const fs::path& dir) {
  json w = {{"format", "safetensors"}};
  std::vector<std::string> files;
  if (fs::exists(dir / "model.safetensors")) {
    w["layout"] = "single";
    files.push_back("model.safetensors");
  } else {
    w["layout"] = "sharded";
    const auto index = io::read_json_file(dir / "model.safetensors.index.json");
    std::map<std::string, bool> seen;
    for (const auto& [name, file] : index.at("weight_map").items())
      if (!seen[file.get<std::string>()]) {
        seen[file.get<std::string>()] = true;
        files.push_back(file.get<std::string>());
      }
  }
  std::map<std::string, int64_t> dtypes;
  int64_t tensors = 0, bytes = 0;
  for (const auto& f : files) {
    const auto header = safetensors_header(dir / f);  // kept alive through the loop
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      ++dtypes[entry.value("dtype", "?")];
      ++tensors;
      const auto offsets = entry.value("data_offsets", std::vector<int64_t>{0, 0});
      if (offsets.size() == 2) bytes += offsets[1] - offsets[0];
    }
  }
  w["files"] = files;
  w["dtypes"] = dtypes;
  w["tensors"] = tensors;
  w["bytes"] = bytes;
  return w;
}

std::string join(const json& list) {
  std::string out;
  for (const auto& v : list)
    out += (out.empty() ? "" : ", ") + (v.is_string() ? v.get<std::string>() : v.dump());
  return out;
}

}  // namespace

json describe_model_dir(const fs::path& dir) {
  auto loaded = io::load_model_dir(dir);
  const auto& config = loaded.model->config();
  json d;
  d["dir"] = dir.string();
  d["config"] = model::config_to_json(config);
  d["family"] = config.gpt() ? "gpt2" : "llama";
  d["layers"] = config.num_hidden_layers;
  d["hidden_size"] = config.hidden_size;
  d["context"] = config.max_position_embeddings;
  d["parameters"] = loaded.model->parameter_count();
  d["weights"] = describe_weights(dir);
  d["tokenizer"] = loaded.tokenizer ? json{{"file", loaded.tokenizer->file_name()},
                                           {"kind", loaded.tokenizer->kind()},
                                           {"vocab_size", loaded.tokenizer->vocab_size()}}
                                    : json(nullptr);
  const bool has_space = fs::exists(dir / model::kElasticSpaceFile);
  d["elastic_space"] = {{"file", has_space ? json(model::kElasticSpaceFile) : json(nullptr)},
                        {"ranked", loaded.space.ranked},
                        {"space", model::elastic_space_to_json(loaded.space)}};

  d["latency_table"] = nullptr;
  d["budget_range"] = nullptr;
  if (fs::exists(dir / route::kLatencyFile)) {
    json t = {{"file", route::kLatencyFile}};
    try {
      const auto table = route::load_latency_table(dir / route::kLatencyFile, config, loaded.space);
      t["runtime"] = table.hardware.value("runtime", "torch");
      t["hardware"] = table.hardware;
      t["contexts"] = table.contexts;
      t["batch"] = table.batch;
      t["full_decode_ms"] = table.decode_ms({});
      d["budget_range"] = {
          {"min", route::latency_fraction(table, model::narrowest_architecture(loaded.space))},
          {"max", 1.0}};
    } catch (const Error& e) {
      t["error"] = e.what();
    }
    d["latency_table"] = t;
  }

  d["routers"] = nullptr;
  if (route::has_routers(dir)) {
    json r = {{"file", route::kRouterFile}, {"weights", route::kRouterWeightsFile}};
    try {
      const auto bundle = route::load_routers(dir, config, loaded.space);
      r["budgets"] = bundle.router->budgets();
      r["dynamic"] = static_cast<bool>(bundle.dynamic);
      r["budget_table_entries"] = bundle.table.size();
    } catch (const Error& e) {
      r["error"] = e.what();
    }
    d["routers"] = r;
  }
  return d;
}

std::string format_model_description(const json& d) {
  std::string out = d.at("dir").get<std::string>() + "\n";
  auto line = [&](const std::string& key, const std::string& value) {
    out += "  " + key + ": " + value + "\n";
  };
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s, %lld parameters, %lld layers, hidden %lld, context %lld",
                d.at("family").get<std::string>().c_str(),
                static_cast<long long>(d.at("parameters").get<int64_t>()),
                static_cast<long long>(d.at("layers").get<int64_t>()),
                static_cast<long long>(d.at("hidden_size").get<int64_t>()),
                static_cast<long long>(d.at("context").get<int64_t>()));
  line("model", buf);
  const auto& w = d.at("weights");
  std::string dtypes;
  for (const auto& [dtype, count] : w.at("dtypes").items())
    dtypes += (dtypes.empty() ? "" : ", ") + dtype + " x" + count.dump();
  std::snprintf(
      buf, sizeof buf, "%s (%s: %s), %lld tensors, %.2f MiB, stored %s",
      w.at("format").get<std::string>().c_str(), w.at("layout").get<std::string>().c_str(),
      join(w.at("files")).c_str(), static_cast<long long>(w.at("tensors").get<int64_t>()),
      static_cast<double>(w.at("bytes").get<int64_t>()) / (1024.0 * 1024.0), dtypes.c_str());
  line("weights", buf);
  const auto& t = d.at("tokenizer");
  line("tokenizer", t.is_null()
                        ? "none"
                        : t.at("file").get<std::string>() + " (" + t.at("kind").get<std::string>() +
                              ", " + t.at("vocab_size").dump() + " tokens)");
  const auto& s = d.at("elastic_space");
  // Widths as layer 0 has them, and whether every layer shares them.
  const auto& mlp = s.at("space").at("mlp_widths");
  const auto& kv = s.at("space").at("attention_kv_groups");
  bool same = true;
  for (size_t l = 1; l < mlp.size(); ++l) same = same && mlp[l] == mlp[0] && kv[l] == kv[0];
  line("elastic space", (s.at("file").is_null() ? std::string("default (no flextron.json)")
                                                : s.at("file").get<std::string>()) +
                            (s.at("ranked").get<bool>() ? ", ranked" : ", not ranked") + "; " +
                            (same ? "every layer" : "layer 0") + ": mlp widths " +
                            (mlp.empty() ? "" : join(mlp[0])) + ", kv groups " +
                            (kv.empty() ? "" : join(kv[0])));
  const auto& l = d.at("latency_table");
  if (l.is_null()) {
    line("latency table", "none (flextron convert or flextron profile makes one)");
  } else if (l.contains("error")) {
    line("latency table", l.at("error").get<std::string>());  // the error names the file
  } else {
    std::snprintf(buf, sizeof buf, "%s (%s runtime, contexts %s, full model %.3f ms/token)",
                  l.at("file").get<std::string>().c_str(),
                  l.at("runtime").get<std::string>().c_str(), join(l.at("contexts")).c_str(),
                  l.at("full_decode_ms").get<double>());
    line("latency table", buf);
    line("measured on", l.at("hardware").dump());
  }
  const auto& r = d.at("routers");
  if (r.is_null()) {
    line("routers", "none (flextron train-router makes them)");
  } else if (r.contains("error")) {
    line("routers", r.at("error").get<std::string>());
  } else {
    line("routers", r.at("file").get<std::string>() + " + " + r.at("weights").get<std::string>() +
                        ": static" + (r.at("dynamic").get<bool>() ? " and dynamic" : "") +
                        ", trained for budgets " + join(r.at("budgets")));
  }
  const auto& b = d.at("budget_range");
  if (b.is_null()) {
    line("budgets", "1.0 only (no usable latency table)");
  } else {
    std::snprintf(buf, sizeof buf, "%.3f .. %.3f of full latency", b.at("min").get<double>(),
                  b.at("max").get<double>());
    line("budgets", buf);
  }
  return out;
}

}  // namespace flextron::pipeline
