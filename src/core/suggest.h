// "Did you mean ...?" for a mistyped name (a command, a choice): the nearest known name by edit
// distance, when it is near enough to be a plausible typo.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace flextron {

// Levenshtein distance (insertions, deletions, substitutions, each costing 1).
size_t edit_distance(const std::string& a, const std::string& b);

// The known name nearest to `name`, or "" when none is within max(2, name.size() / 3) edits.
// Ties go to the first in `known`.
std::string nearest_name(const std::string& name, const std::vector<std::string>& known);

// "unknown <what> 'NAME'; did you mean 'NEAREST'?" (or "...; known: a, b, c" when nothing is
// near): the one message for a mistyped name.
std::string unknown_name_message(const std::string& what, const std::string& name,
                                 const std::vector<std::string>& known);

}  // namespace flextron
