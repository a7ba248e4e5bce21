#include "train/checkpoint.h"

#include <fstream>

#include <torch/serialize.h>
#include <torch/torch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace flextron::train {

namespace fs = std::filesystem;

void save_checkpoint(const fs::path& dir, model::TransformerImpl& model,
                     torch::optim::Optimizer& optimizer, const nlohmann::json& state) {
  const auto tmp = dir / "checkpoint.tmp", current = dir / "checkpoint",
             old = dir / "checkpoint.old";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  model::save_config(model.config(), tmp / "config.json");
  io::save_safetensors(tmp / "model.safetensors", model.state());
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  archive.save_to((tmp / "optimizer.pt").string());
  io::write_text_atomically(tmp / "state.json", state.dump(2) + "\n");
  // Swap: current -> old, tmp -> current, drop old. A kill between the renames leaves `old`,
  // which find_checkpoint() falls back to.
  fs::remove_all(old);
  if (fs::exists(current)) fs::rename(current, old);
  fs::rename(tmp, current);
  fs::remove_all(old);
}

std::optional<fs::path> find_checkpoint(const fs::path& dir) {
  for (const char* name : {"checkpoint", "checkpoint.old"}) {
    const auto p = dir / name;
    if (fs::exists(p / "state.json")) return p;
  }
  return std::nullopt;
}

nlohmann::json load_checkpoint(const fs::path& checkpoint, model::TransformerImpl& model,
                               torch::optim::Optimizer& optimizer) {
  const auto saved = model::config_to_json(model::load_config(checkpoint / "config.json"));
  const auto wanted = model::config_to_json(model.config());
  for (const auto& [key, value] : wanted.items()) {
    if (!saved.contains(key) || saved[key] != value)
      fail(checkpoint.string(), "checkpoint was made for a different config: " + key + " is " +
                                    (saved.contains(key) ? saved[key].dump() : "absent") +
                                    " there, " + value.dump() + " here");
  }
  model.load_state(io::load_safetensors(checkpoint / "model.safetensors"),
                   (checkpoint / "model.safetensors").string());
  torch::serialize::InputArchive archive;
  archive.load_from((checkpoint / "optimizer.pt").string());
  optimizer.load(archive);
  return io::read_json_file(checkpoint / "state.json");
}

}  // namespace flextron::train
