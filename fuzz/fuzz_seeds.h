// The seed corpus of every fuzz target, written from the library's own writers (a tiny random
// model as GGUF F32 / Q8_0 / Q4_0, safetensors, llama2.c and config.json; stories260K's
// tok512.bin; small tokenizer.json files; request bodies), so that mutations start from valid
// files and reach past the first check.
#pragma once

#include <filesystem>

namespace flextron::fuzz {

// Writes DIR/<target>/<seed> for every target; `shared_data` is ../shared/data (tok512.bin; the
// tokenizer seeds are skipped where it is absent).
void write_seeds(const std::filesystem::path& dir, const std::filesystem::path& shared_data);

}  // namespace flextron::fuzz
