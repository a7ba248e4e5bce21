#include "speculative_options.h"

#include "runtime/speculative.h"

namespace flextron::cli {

void SpeculativeArgs::add_to(CLI::App* cmd) {
  auto* flag = cmd->add_flag(
      "--speculative", on,
      "Self-speculative decoding: a sub-network drafts, the full model verifies (the same "
      "greedy text, the same sampling distribution; fast runtime)");
  auto* arch = cmd->add_option("--draft-arch", draft.arch,
                               "The draft's architecture (--arch forms; default: the fastest of "
                               "a few low budgets, measured at start)");
  auto* budget = cmd->add_option("--draft-budget", draft.budget,
                                 "The draft: the static router's choice at this latency fraction");
  auto* tokens = cmd->add_option("--draft-tokens", draft_tokens,
                                 "Tokens drafted per round (0: adapted to the acceptance rate)")
                     ->check(CLI::Range(int64_t{0}, runtime::kMaxDraftTokens))
                     ->capture_default_str();
  arch->needs(flag);
  budget->needs(flag);
  tokens->needs(flag);
  arch->excludes(budget);
}

}  // namespace flextron::cli
