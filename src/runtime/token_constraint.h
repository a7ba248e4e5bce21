// A rule on which tokens may come next (structured output, runtime/json_constraint.h): a
// Sequence asks it before every pick and masks the rest of the logits out.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace flextron::runtime {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // The same rule in the same state, advancing separately from here on.
  virtual std::unique_ptr<TokenConstraint> clone() const = 0;
  // Sets allowed[t] (sized to the vocabulary) to 1 for every token that may come next, knowing
  // that at most `tokens_after` more tokens may follow it, and 0 for the others. Returns whether
  // the output may end here (the caller then also allows its end-of-sequence tokens).
  virtual bool allowed(int64_t tokens_after, std::vector<uint8_t>& allowed) = 0;
  // Advances past `token`, which allowed() permitted.
  virtual void accept(int64_t token) = 0;
};

}  // namespace flextron::runtime
