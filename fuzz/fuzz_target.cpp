#include "fuzz_target.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>

namespace flextron::fuzz {

std::filesystem::path scratch_dir(const std::string& name) {
  const char* tmp = std::getenv("TMPDIR");
  auto dir = std::filesystem::path(tmp != nullptr && *tmp ? tmp : "/tmp") /
             ("flextron-fuzz-" + std::to_string(getpid())) / name;
  std::filesystem::create_directories(dir);
  return dir;
}

std::filesystem::path scratch_file(const std::string& name, const std::string& bytes) {
  const auto path = scratch_dir("files") / name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

model::ModelConfig tiny_config() {
  model::ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.vocab_size = 512;
  c.max_position_embeddings = 64;
  return c;
}

void violated(const std::string& property) {
  throw std::logic_error("property violated: " + property);
}

std::map<std::string, TargetFunction>& targets() {
  static std::map<std::string, TargetFunction> all;
  return all;
}

}  // namespace flextron::fuzz
