// The streamed text of a reply: the input is split into stop strings and generated pieces
// (separated by 0x00 bytes; the first byte says how many of them are stop strings). What the
// stream sends, plus what it holds back, must never contain a stop string, and without stop
// strings it must be the whole input.
#include <vector>

#include "fuzz_target.h"
#include "serve/text_stream.h"

FLEXTRON_FUZZ_TARGET(text_stream) {
  using namespace flextron;
  if (size == 0) return 0;
  const size_t stop_count = data[0] % 4;
  std::vector<std::string> parts(1);
  for (size_t i = 1; i < size; ++i) {
    if (data[i] == 0)
      parts.emplace_back();
    else
      parts.back() += static_cast<char>(data[i]);
  }
  std::vector<std::string> stops;
  size_t next = 0;
  for (; next < parts.size() && stops.size() < stop_count; ++next)
    if (!parts[next].empty()) stops.push_back(parts[next]);
  serve::TextStream stream(stops);
  std::string sent, generated;
  for (size_t i = next; i < parts.size(); ++i) {
    generated += parts[i];
    sent += stream.push(parts[i]);
  }
  sent += stream.flush();
  for (const auto& stop : stops)
    if (sent.find(stop) != std::string::npos) fuzz::violated("a stop string was sent");
  if (stops.empty() && sent != generated) fuzz::violated("text lost or invented");
  if (generated.compare(0, sent.size(), sent) != 0) fuzz::violated("sent text is not a prefix");
  return 0;
}
