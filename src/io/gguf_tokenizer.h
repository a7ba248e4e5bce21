// Tokenizers from GGUF vocabulary metadata (tokenizer.ggml.*), as llama.cpp reads them:
//  - `llama`: SentencePiece pieces with scores; bigrams merge by the merged piece's score, byte
//    fallback "<0xXX>" for unknown characters, a leading space unless add_space_prefix is false;
//  - `gpt2`: byte-level BPE with tokenizer.ggml.merges, pre-tokenized by the regexes llama.cpp
//    uses for tokenizer.ggml.pre (text::llama_cpp_pre_regexes).
// Control (3), unknown (2) and user-defined (4) tokens are matched in the text first.
// The tokenizer saves as an equivalent HF tokenizer.json (+ tokenizer_config.json).
#pragma once

#include <memory>
#include <string>

#include "io/gguf.h"
#include "text/tokenizer.h"

namespace flextron::io {

// Throws flextron::Error naming `where` and the key for a missing or unsupported vocabulary.
std::unique_ptr<text::Tokenizer> gguf_tokenizer(const GgufMetadata& metadata,
                                                const std::string& where);

// A tokenizer from a path: a model directory (text::load_tokenizer), a .gguf file (its
// vocabulary), tokenizer.json, a SentencePiece .model, or vocab.json (merges.txt beside it).
std::unique_ptr<text::Tokenizer> load_tokenizer_path(const std::filesystem::path& path);

}  // namespace flextron::io
