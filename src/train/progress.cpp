#include "train/progress.h"

#include <cstdio>

#include "core/error.h"

namespace flextron::train {

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof(buf), "%llds", s);
  return buf;
}

Progress::Progress(const std::filesystem::path& log_path, int64_t total_steps,
                   int64_t tokens_per_step, int64_t first_step)
    : log_(log_path, std::ios::app),
      total_steps_(total_steps),
      tokens_per_step_(tokens_per_step),
      first_step_(first_step),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {
  if (!log_) fail(log_path.string(), "cannot open log for appending");
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::step(int64_t step, double loss, double lr, double grad_norm) {
  const double elapsed = elapsed_seconds();
  const int64_t done = step + 1 - first_step_;
  const double tok_s = elapsed > 0 ? static_cast<double>(done * tokens_per_step_) / elapsed : 0.0;
  const double eta =
      done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_steps_ - step - 1)
               : 0.0;
  nlohmann::json rec = {{"kind", "train"},
                        {"step", step + 1},
                        {"tokens", (step + 1) * tokens_per_step_},
                        {"loss", loss},
                        {"lr", lr},
                        {"grad_norm", grad_norm},
                        {"tokens_per_second", tok_s},
                        {"elapsed_seconds", elapsed}};
  log_ << rec.dump() << "\n";
  log_.flush();
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_print_).count() >= 2.0 || step + 1 == total_steps_ ||
      done == 1) {
    last_print_ = now;
    std::fprintf(stderr,
                 "step %6lld/%lld | tokens %10lld | loss %.4f | lr %.2e | %8.0f tok/s | ETA %s\n",
                 static_cast<long long>(step + 1), static_cast<long long>(total_steps_),
                 static_cast<long long>((step + 1) * tokens_per_step_), loss, lr, tok_s,
                 format_duration(eta).c_str());
  }
}

void Progress::event(const std::string& kind, nlohmann::json fields) {
  fields["kind"] = kind;
  log_ << fields.dump() << "\n";
  log_.flush();
  std::string line;
  for (const auto& [k, v] : fields.items())
    if (k != "kind")
      line += " " + k + "=" + (v.is_number_float() ? std::to_string(v.get<double>()) : v.dump());
  std::fprintf(stderr, "[%s]%s\n", kind.c_str(), line.c_str());
}

}  // namespace flextron::train
