#include "core/progress_line.h"

#include <unistd.h>
#include <cstdarg>
#include <vector>

namespace flextron {

namespace {
// A terminal redraw at most this often: redrawing faster only costs time.
constexpr double kRedrawSeconds = 0.1;
// Off a terminal, a line at most this often.
constexpr double kLineSeconds = 3.0;
}  // namespace

ProgressLine::ProgressLine(std::FILE* out)
    : ProgressLine(out, ::isatty(::fileno(out)) == 1, kLineSeconds) {}

ProgressLine::ProgressLine(std::FILE* out, bool terminal, double line_interval_seconds)
    : out_(out), terminal_(terminal), interval_(line_interval_seconds) {}

ProgressLine::~ProgressLine() {
  finish();
}

void ProgressLine::update(const std::string& text) {
  pending_ = text;
  has_pending_ = true;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_shown_).count();
  if (shown_ && since < (terminal_ ? kRedrawSeconds : interval_)) return;
  last_shown_ = now;
  show();
}

void ProgressLine::updatef(const char* format, ...) {
  std::va_list args;
  va_start(args, format);
  std::va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::vector<char> buffer(static_cast<size_t>(n > 0 ? n : 0) + 1);
  std::vsnprintf(buffer.data(), buffer.size(), format, args);
  va_end(args);
  update(std::string(buffer.data()));
}

void ProgressLine::show() {
  if (terminal_) {
    // Blank what is left of a longer previous line.
    const size_t pad = drawn_length_ > pending_.size() ? drawn_length_ - pending_.size() : 0;
    std::fprintf(out_, "\r%s%s", pending_.c_str(), std::string(pad, ' ').c_str());
    drawn_length_ = pending_.size();
  } else {
    std::fprintf(out_, "%s\n", pending_.c_str());
  }
  std::fflush(out_);
  has_pending_ = false;
  shown_ = true;
}

void ProgressLine::finish() {
  if (has_pending_) show();
  if (terminal_ && shown_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  shown_ = false;
  drawn_length_ = 0;
}

}  // namespace flextron
