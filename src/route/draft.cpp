#include "route/draft.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "route/select.h"
#include "runtime/fast_generate.h"

namespace flextron::route {

namespace {
// The largest allowed width at most fraction * full (the narrowest when none is).
int64_t width_at(const std::vector<int64_t>& choices, double fraction) {
  const double target = fraction * static_cast<double>(choices.back());
  int64_t best = choices.front();
  for (int64_t c : choices)
    if (static_cast<double>(c) <= target + 1e-9) best = c;
  return best;
}

void add_unique(std::vector<DraftCandidate>& out, DraftCandidate c) {
  for (const auto& o : out)
    if (o.arch == c.arch) return;
  out.push_back(std::move(c));
}

// Prompts any text model continues; short, so calibration costs a few hundred tokens.
const char* const kCalibrationPrompts[] = {"Once upon a time", "The little dog", "She said that"};
}  // namespace

std::vector<DraftCandidate> draft_candidates(const std::filesystem::path& dir,
                                             model::TransformerImpl& model,
                                             const model::ElasticSpace& space) {
  std::vector<DraftCandidate> out;
  const auto full = model::full_architecture(model.config());
  if (std::filesystem::exists(dir / kLatencyFile)) {
    for (double b : {0.3, 0.45, 0.6}) {
      try {
        Budget budget;
        budget.value = b;
        auto plan = plan_budget(dir, model, space, budget, RouterKind::Static);
        char label[32];
        std::snprintf(label, sizeof label, "budget %.2g", b);
        if (!plan.arch.empty() && plan.arch != full) add_unique(out, {label, plan.arch});
      } catch (const Error&) {
        // A budget below the table's smallest, or no router: the next, or the uniform ones.
      }
    }
  }
  if (!out.empty()) return out;
  for (double f : {0.25, 0.375, 0.5}) {
    model::Architecture arch(space.mlp.size());
    for (size_t l = 0; l < arch.size(); ++l)
      arch[l] = {width_at(space.mlp[l], f), width_at(space.kv_groups[l], f)};
    char label[48];
    std::snprintf(label, sizeof label, "mlp=%.3g,attn=%.3g", f, f);
    if (arch != full) add_unique(out, {label, arch});
  }
  return out;
}

std::vector<DraftCandidate> requested_drafts(const DraftRequest& request,
                                             const std::filesystem::path& dir,
                                             model::TransformerImpl& model,
                                             const model::ElasticSpace& space) {
  if (!request.arch.empty() && !request.budget.empty())
    fail("--draft-arch", "give a draft architecture or a draft budget, not both");
  if (!request.arch.empty()) {
    try {
      return {{request.arch, model::parse_architecture(request.arch, model.config(), space)}};
    } catch (const Error& e) {
      fail("--draft-arch", e.what());
    }
  }
  if (request.budget.empty()) return draft_candidates(dir, model, space);
  Budget budget;
  try {
    size_t used = 0;
    budget.value = std::stod(request.budget, &used);
    if (used != request.budget.size()) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    fail("--draft-budget", "'" + request.budget + "' is not a number");
  }
  if (!(budget.value > 0.0 && budget.value < 1.0))
    fail("--draft-budget", "must be a latency fraction in (0, 1), got " + request.budget);
  try {
    auto plan = plan_budget(dir, model, space, budget, RouterKind::Static);
    return {{"budget " + request.budget, plan.arch}};
  } catch (const Error& e) {
    fail("--draft-budget", e.what());
  }
}

nlohmann::json DraftChoice::to_json(const model::ModelConfig& config) const {
  nlohmann::json trials_json = nlohmann::json::array();
  for (const auto& t : trials)
    trials_json.push_back({{"draft", t.candidate.label},
                           {"architecture", model::describe_architecture(t.candidate.arch, config)},
                           {"acceptance_rate", t.stats.acceptance_rate()},
                           {"tokens_per_round", t.stats.tokens_per_round()},
                           {"tokens_per_second", t.tokens_per_second}});
  return {{"draft", chosen.label},
          {"architecture", model::describe_architecture(chosen.arch, config)},
          {"calibration_seconds", seconds},
          {"trials", trials_json}};
}

DraftChoice choose_draft(runtime::FastDecoder& engine, const text::Tokenizer& tokenizer,
                         const std::vector<DraftCandidate>& candidates,
                         const model::Architecture& verifier, int64_t draft_tokens,
                         int64_t tokens) {
  if (candidates.empty())
    fail("--speculative", "this model has no sub-network narrower than the full model to draft");
  const auto start = std::chrono::steady_clock::now();
  DraftChoice choice;
  double best = -1.0;
  for (const auto& candidate : candidates) {
    runtime::GenerateOptions options;
    options.max_tokens = tokens;
    options.sampling.temperature = 0.0;
    options.arch = verifier;
    options.speculative = {candidate.arch, draft_tokens};
    DraftTrial trial{candidate, {}, 0.0};
    double seconds = 0.0;
    int64_t decoded = 0;
    for (const char* prompt : kCalibrationPrompts) {
      const auto r = runtime::generate_fast(engine, tokenizer, prompt, options);
      seconds += r.decode_seconds;
      decoded += r.decode_tokens;
      if (r.speculative) trial.stats += *r.speculative;
    }
    trial.tokens_per_second = seconds > 0 ? static_cast<double>(decoded) / seconds : 0.0;
    if (trial.tokens_per_second > best) {
      best = trial.tokens_per_second;
      choice.chosen = candidate;
    }
    choice.trials.push_back(std::move(trial));
  }
  choice.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return choice;
}

DraftChoice pick_draft(const DraftRequest& request, const std::filesystem::path& dir,
                       model::TransformerImpl& model, const model::ElasticSpace& space,
                       runtime::FastDecoder& engine, const text::Tokenizer& tokenizer,
                       const model::Architecture& verifier, int64_t draft_tokens) {
  auto candidates = requested_drafts(request, dir, model, space);
  if (candidates.size() == 1) {
    DraftChoice choice;
    choice.chosen = std::move(candidates.front());
    return choice;
  }
  return choose_draft(engine, tokenizer, candidates, verifier, draft_tokens);
}

}  // namespace flextron::route
