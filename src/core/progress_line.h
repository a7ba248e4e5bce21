// One progress line for long jobs, right for both a terminal and a log file. On a terminal the
// line is redrawn in place with '\r' and ended with '\n' by finish(); anywhere else (stderr
// redirected to a file, a pipe) each shown state is a whole line of its own, at most one every
// few seconds plus the last, so a log stays readable line by line.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace flextron {

class ProgressLine {
 public:
  // On `out` (stderr by default); a terminal when isatty(fileno(out)).
  explicit ProgressLine(std::FILE* out = stderr);
  // As above with the mode given: `terminal` redraws in place; otherwise whole lines, at most
  // one per `line_interval_seconds` (the last always comes out at finish()).
  ProgressLine(std::FILE* out, bool terminal, double line_interval_seconds);
  ~ProgressLine();  // finish()
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // The current state, e.g. "rank: 3/8 sequences, ETA 4s". Shown now, or held until the
  // interval has passed (a held state is shown by the next update or finish()).
  void update(const std::string& text);
  // printf-style update.
  void updatef(const char* format, ...) __attribute__((format(printf, 2, 3)));
  // Shows a held state, then ends the line (on a terminal); the next update starts a new one.
  void finish();

  bool terminal() const { return terminal_; }

 private:
  void show();

  std::FILE* out_;
  bool terminal_;
  double interval_;
  std::string pending_;
  bool has_pending_ = false;
  bool shown_ = false;       // something has been shown since the last finish()
  size_t drawn_length_ = 0;  // terminal: length of the line now drawn (to blank its tail)
  std::chrono::steady_clock::time_point last_shown_;
};

}  // namespace flextron
