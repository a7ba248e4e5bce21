// Which sub-network drafts for self-speculative decoding (runtime/speculative.h). The candidates
// are the static router's choices at low latency budgets when the model has a latency table and
// router, else uniform sub-networks of its elastic space; each runs greedy speculative decoding
// on a few calibration prompts, and the one with the most tokens per second drafts. Greedy
// output does not depend on the choice (it is the full model's); seeded sampling does, so a run
// that must repeat a sampled text names its draft (--draft-arch / --draft-budget).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/elastic_space.h"
#include "model/transformer.h"
#include "runtime/fast_decoder.h"
#include "runtime/speculative.h"
#include "text/tokenizer.h"

namespace flextron::route {

struct DraftCandidate {
  std::string label;  // "budget 0.3" or "mlp=0.25,attn=0.5"
  model::Architecture arch;
};

// The static router's architectures at latency budgets 0.3, 0.45 and 0.6 when dir has a latency
// table and a router (those budgets the table can reach), else the elastic space's uniform
// sub-networks at fractions 0.25, 0.375 and 0.5 of every layer's MLP and attention.
std::vector<DraftCandidate> draft_candidates(const std::filesystem::path& dir,
                                             model::TransformerImpl& model,
                                             const model::ElasticSpace& space);

// What a user asks for: a draft architecture (any form parse_architecture reads), or a latency
// budget whose static-router choice drafts; at most one, neither = calibrate.
struct DraftRequest {
  std::string arch;
  std::string budget;
};
// The named draft (one candidate), or draft_candidates() when neither is given. Throws
// flextron::Error naming --draft-arch / --draft-budget for an architecture outside the space, a
// budget outside (0, 1) or one the model cannot plan, or both given.
std::vector<DraftCandidate> requested_drafts(const DraftRequest& request,
                                             const std::filesystem::path& dir,
                                             model::TransformerImpl& model,
                                             const model::ElasticSpace& space);

// One candidate's calibration: greedy speculative decoding of the calibration prompts.
struct DraftTrial {
  DraftCandidate candidate;
  runtime::SpeculativeStats stats;
  double tokens_per_second = 0.0;
};
struct DraftChoice {
  DraftCandidate chosen;
  std::vector<DraftTrial> trials;
  double seconds = 0.0;  // the calibration's
  nlohmann::json to_json(const model::ModelConfig& config) const;
};

// Measures every candidate on `engine` (verifying with `verifier`, empty = full) over the
// calibration prompts, `tokens` new tokens each, with `draft_tokens` as the rounds' k (0:
// adaptive), and picks the fastest. Throws flextron::Error when there is no candidate.
DraftChoice choose_draft(runtime::FastDecoder& engine, const text::Tokenizer& tokenizer,
                         const std::vector<DraftCandidate>& candidates,
                         const model::Architecture& verifier, int64_t draft_tokens,
                         int64_t tokens = 48);

// requested_drafts(), calibrated by choose_draft() when that leaves more than one candidate.
DraftChoice pick_draft(const DraftRequest& request, const std::filesystem::path& dir,
                       model::TransformerImpl& model, const model::ElasticSpace& space,
                       runtime::FastDecoder& engine, const text::Tokenizer& tokenizer,
                       const model::Architecture& verifier, int64_t draft_tokens);

}  // namespace flextron::route
