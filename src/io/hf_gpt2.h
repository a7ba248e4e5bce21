// HuggingFace GPT-2's tensor layout <-> ours. GPT-2 stores its projections as Conv1D weights,
// [in, out] (y = x W + b, the transpose of a Linear's [out, in]), and fuses the query, key and
// value projections into one c_attn of [hidden, 3 * hidden]. Ours keeps Llama's separate
// q/k/v/o and up/down Linear layout so that every elastic slice, the permutation and extraction
// serve both families (see model/transformer.h).
//
//   transformer.wte / wpe               <-> model.embed_tokens / model.embed_positions
//   transformer.h.N.ln_1 / ln_2         <-> model.layers.N.input_layernorm /
//   post_attention_layernorm transformer.h.N.attn.c_attn         <-> self_attn.{q,k,v}_proj
//   (columns q | k | v, transposed) transformer.h.N.attn.c_proj         <-> self_attn.o_proj
//   (transposed) transformer.h.N.mlp.c_fc / c_proj   <-> mlp.up_proj / mlp.down_proj (transposed)
//   transformer.ln_f                    <-> model.norm
#pragma once

#include <string>

#include "io/safetensors.h"
#include "model/config.h"

namespace flextron::io {

// Our state dict -> GPT2LMHeadModel's names and shapes (contiguous, ready to save).
TensorMap gpt2_to_hf(const TensorMap& ours, const model::ModelConfig& config);

// GPT-2 tensors (with or without the "transformer." prefix, as GPT2Model saves them) -> our
// names. The attention's causal-mask buffers (attn.bias, attn.masked_bias) of older files are
// dropped. Throws flextron::Error naming `where` and the missing tensor or wrong shape.
TensorMap gpt2_from_hf(const TensorMap& hf, const model::ModelConfig& config,
                       const std::string& where);

}  // namespace flextron::io
