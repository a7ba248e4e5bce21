// UTF-8 validation: training text with invalid bytes is reported, never silently dropped.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace flextron::text {

// Byte offset of the first invalid UTF-8 sequence in `data`, or nullopt if it is all valid.
// Rejects overlong encodings, surrogates and code points above U+10FFFF, as the standard says.
std::optional<size_t> find_invalid_utf8(std::string_view data);

// `data` with every invalid sequence replaced by U+FFFD, one per byte that starts no valid
// sequence (how sampled byte tokens that do not complete a character are written as text).
std::string valid_utf8(std::string_view data);

// Throws flextron::Error "<where>: invalid UTF-8 at byte offset N" if `data` is not valid.
void check_utf8(std::string_view data, const std::string& where, size_t base_offset = 0);

// A whole text file, checked: throws flextron::Error naming the path for a missing or empty file
// or invalid UTF-8.
std::string read_utf8_file(const std::filesystem::path& path);

}  // namespace flextron::text
