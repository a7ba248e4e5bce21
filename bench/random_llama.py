#!/usr/bin/env python3
# Writes a Llama model directory (config.json + model.safetensors, f32 or bf16) of a given shape
# with random weights: one 1M-float block of N(0, 0.02) values repeated, norms 1. Speed does not
# depend on the values; this is what the speed benchmarks run on. Standard library only.
# usage: bench/random_llama.py OUT_DIR [--dim 768 --layers 12 --heads 12 --kv-heads 12
#        --mlp 2048 --vocab 32000 --context 1024 --dtype F32|BF16 --untied
#        --tokenizer tokenizer.model]
# --tokenizer copies a tokenizer file into the directory (GGUF export embeds it, and llama.cpp
# needs one to load a file), e.g. ../shared/data/tokenizers/llama2_tokenizer.model (32000).
import argparse, array, json, os, random, shutil, struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--dim", type=int, default=768)
p.add_argument("--layers", type=int, default=12)
p.add_argument("--heads", type=int, default=12)
p.add_argument("--kv-heads", type=int, default=0)
p.add_argument("--mlp", type=int, default=2048)
p.add_argument("--vocab", type=int, default=32000)
p.add_argument("--context", type=int, default=1024)
p.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
p.add_argument("--untied", action="store_true")
p.add_argument("--tokenizer", default="")
a = p.parse_args()
kv = a.kv_heads or a.heads
hd = a.dim // a.heads
config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": a.dim,
          "intermediate_size": a.mlp, "num_hidden_layers": a.layers,
          "num_attention_heads": a.heads, "num_key_value_heads": kv, "vocab_size": a.vocab,
          "max_position_embeddings": a.context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": not a.untied, "bos_token_id": 1, "eos_token_id": 2}
shapes = [("model.embed_tokens.weight", [a.vocab, a.dim])]
for l in range(a.layers):
    q = f"model.layers.{l}."
    shapes += [(q + "input_layernorm.weight", [a.dim]), (q + "post_attention_layernorm.weight", [a.dim])]
    shapes += [(q + "self_attn.q_proj.weight", [a.heads * hd, a.dim]),
               (q + "self_attn.k_proj.weight", [kv * hd, a.dim]),
               (q + "self_attn.v_proj.weight", [kv * hd, a.dim]),
               (q + "self_attn.o_proj.weight", [a.dim, a.heads * hd])]
    shapes += [(q + "mlp.gate_proj.weight", [a.mlp, a.dim]), (q + "mlp.up_proj.weight", [a.mlp, a.dim]),
               (q + "mlp.down_proj.weight", [a.dim, a.mlp])]
shapes.append(("model.norm.weight", [a.dim]))
if a.untied:
    shapes.append(("lm_head.weight", [a.vocab, a.dim]))
random.seed(0)
block = array.array("f", [random.gauss(0.0, 0.02) for _ in range(1 << 20)]).tobytes()
ones = array.array("f", [1.0] * a.dim).tobytes()
width = 4 if a.dtype == "F32" else 2
def payload(n, norm):
    b = ones[: 4 * n] if norm else (block * (4 * n // len(block) + 1))[: 4 * n]
    return b if a.dtype == "F32" else memoryview(b).cast("H")[1::2].tobytes()  # bf16: high halves
os.makedirs(a.out, exist_ok=True)
json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=1)
header, offset = {}, 0
for name, shape in shapes:
    n = 1
    for s in shape: n *= s
    header[name] = {"dtype": a.dtype, "shape": shape, "data_offsets": [offset, offset + n * width]}
    offset += n * width
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name, shape in shapes:
        n = 1
        for s in shape: n *= s
        f.write(payload(n, len(shape) == 1))
print("parameters:", sum(eval("*".join(map(str, s))) for _, s in shapes))
if a.tokenizer:
    shutil.copy(a.tokenizer, os.path.join(a.out, os.path.basename(a.tokenizer) if a.tokenizer.endswith(".bin") else "tokenizer.model"))
