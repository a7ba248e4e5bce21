// HTTP request bodies for /v1/completions and /v1/chat/completions: any bytes are either a
// request or an ApiError (400 naming the field), never another exception.
#include "fuzz_target.h"
#include "serve/api.h"

FLEXTRON_FUZZ_TARGET(request) {
  using namespace flextron;
  const auto body = fuzz::bytes_of(data, size);
  for (auto endpoint : {serve::Endpoint::Completions, serve::Endpoint::ChatCompletions}) {
    try {
      serve::parse_completion_request(body, endpoint);
    } catch (const serve::ApiError& e) {
      if (e.status != 400) throw;
    }
  }
  return 0;
}
