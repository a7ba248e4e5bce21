// flextron info's logic: what a model directory holds and where each part came from, as JSON
// (info --json prints it as it is) and as the lines info prints.
//   config (config.json's fields), family, layers, hidden_size, context, parameters
//   weights:       format (safetensors), layout (single | sharded), files, stored dtypes
//                  (tensor count per dtype), bytes; GGUF or llama2.c imports are such a directory
//   tokenizer:     file and kind, or null
//   elastic_space: the file (flextron.json, or null for the default space), ranked, the widths
//   latency_table: null, or file, runtime, hardware, contexts, batch, full_decode_ms
//                  (an unreadable or mismatched table: file and error)
//   routers:       null, or files, budgets, dynamic (or file and error)
//   budget_range:  null without a latency table, else {min, max}: the narrowest architecture's
//                  predicted latency fraction .. 1.0
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace flextron::pipeline {

// Loads the model in `dir` (errors as io::load_model_dir's); the optional parts (latency table,
// routers) never fail the description: a broken one is reported in its entry.
nlohmann::json describe_model_dir(const std::filesystem::path& dir);

// The description as indented "key: value" lines, one part per block.
std::string format_model_description(const nlohmann::json& description);

}  // namespace flextron::pipeline
