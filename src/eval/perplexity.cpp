#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "core/error.h"

namespace flextron::eval {

double PerplexityResult::mean_nll() const {
  return tokens_scored > 0 ? total_nll / static_cast<double>(tokens_scored) : std::nan("");
}
double PerplexityResult::perplexity() const {
  return std::exp(mean_nll());
}
double PerplexityResult::bits_per_byte() const {
  return bytes_scored > 0 ? total_nll / std::log(2.0) / static_cast<double>(bytes_scored)
                          : std::nan("");
}

namespace {

// One window to run: its tokens and the range of positions whose next-token NLL counts.
struct Window {
  std::vector<int64_t> tokens;
  int64_t score_from = 0;  // logits at positions [score_from, score_to) predict tokens[p + 1]
  int64_t score_to = 0;
};

void run_windows(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                 const std::vector<Window>& windows, const PerplexityOptions& o,
                 PerplexityResult& r) {
  c10::InferenceMode guard;
  const auto* arch = o.arch.empty() ? nullptr : &o.arch;
  // A router picks attention widths per sequence (route/dynamic_router.h): one window per call.
  const size_t batch = o.router != nullptr ? 1 : static_cast<size_t>(o.batch);
  for (size_t i = 0; i < windows.size();) {
    // Windows in one batch have equal length except possibly the last of a rolling pass: group
    // only equal lengths.
    size_t end = i + 1;
    while (end < windows.size() && end - i < batch &&
           windows[end].tokens.size() == windows[i].tokens.size())
      ++end;
    const auto len = static_cast<int64_t>(windows[i].tokens.size());
    auto input = torch::empty({static_cast<int64_t>(end - i), len}, torch::kLong);
    for (size_t w = i; w < end; ++w)
      input[w - i].copy_(torch::tensor(windows[w].tokens, torch::kLong));
    auto logprobs =
        torch::log_softmax(
            model.forward(input.to(model.device()), nullptr, arch, o.router).to(torch::kFloat), -1)
            .cpu();
    for (size_t w = i; w < end; ++w) {
      const auto& win = windows[w];
      const int64_t count = win.score_to - win.score_from;
      if (count <= 0) continue;
      auto targets = torch::tensor(std::vector<int64_t>(win.tokens.begin() + win.score_from + 1,
                                                        win.tokens.begin() + win.score_to + 1),
                                   torch::kLong);
      auto picked =
          logprobs[w - i].narrow(0, win.score_from, count).gather(1, targets.unsqueeze(1));
      r.total_nll -= picked.to(torch::kDouble).sum().item<double>();
      for (int64_t p = win.score_from; p < win.score_to; ++p)
        r.bytes_scored +=
            static_cast<int64_t>(tokenizer.decode_piece(win.tokens[p], win.tokens[p + 1]).size());
      r.tokens_scored += count;
    }
    i = end;
  }
}

}  // namespace

PerplexityResult perplexity(model::TransformerImpl& model, const text::Tokenizer& tokenizer,
                            const std::vector<int64_t>& tokens, const PerplexityOptions& options) {
  const auto n = static_cast<int64_t>(tokens.size());
  auto o = options;
  if (o.ctx == 0) o.ctx = std::min(kDefaultPerplexityCtx, model.config().max_position_embeddings);
  if (o.ctx < 2) fail("--ctx", "must be at least 2");
  if (o.ctx > model.config().max_position_embeddings)
    fail("--ctx", std::to_string(o.ctx) + " exceeds the model's context of " +
                      std::to_string(model.config().max_position_embeddings));
  if (o.batch < 1) fail("--batch", "must be at least 1");
  PerplexityResult r;
  r.ctx = o.ctx;
  r.stride = o.stride;
  std::vector<Window> windows;
  if (o.stride <= 0) {
    r.convention = "llama.cpp";
    if (n < o.ctx)
      fail("--data", "text has " + std::to_string(n) + " tokens, fewer than one window of --ctx " +
                         std::to_string(o.ctx));
    for (int64_t start = 0; start + o.ctx <= n; start += o.ctx) {
      Window w;
      w.tokens.assign(tokens.begin() + start, tokens.begin() + start + o.ctx);
      w.tokens[0] = tokenizer.bos_id();
      w.score_from = o.ctx / 2;
      w.score_to = o.ctx - 1;
      windows.push_back(std::move(w));
    }
  } else {
    r.convention = "rolling";
    if (o.stride > o.ctx) fail("--stride", "must not exceed --ctx");
    if (n < 2) fail("--data", "text too short to score");
    // Targets [done, end) are scored in the window [max(0, end - ctx), end).
    for (int64_t done = 1; done < n;) {
      const int64_t end = std::min(n, done + o.stride);
      const int64_t begin = std::max<int64_t>(0, end - o.ctx);
      Window w;
      w.tokens.assign(tokens.begin() + begin, tokens.begin() + end);
      w.score_from = done - 1 - begin;
      w.score_to = end - 1 - begin;
      windows.push_back(std::move(w));
      done = end;
    }
  }
  r.windows = static_cast<int64_t>(windows.size());
  run_windows(model, tokenizer, windows, o, r);
  return r;
}

}  // namespace flextron::eval
