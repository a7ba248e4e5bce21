// Progress of a long job: a line on the terminal every few seconds (step, tokens, loss, tokens/s,
// ETA) and every record appended to a JSON-lines log.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace flextron::train {

class Progress {
 public:
  // log_path: JSON-lines file, appended to (a resumed run continues the same log).
  Progress(const std::filesystem::path& log_path, int64_t total_steps, int64_t tokens_per_step,
           int64_t first_step);

  // Records one step; prints when enough time has passed or at the last step.
  void step(int64_t step, double loss, double lr, double grad_norm);
  // Records an evaluation or any other event (printed at once).
  void event(const std::string& kind, nlohmann::json fields);

  double elapsed_seconds() const;

 private:
  std::ofstream log_;
  int64_t total_steps_, tokens_per_step_, first_step_;
  std::chrono::steady_clock::time_point start_, last_print_;
};

// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);

}  // namespace flextron::train
