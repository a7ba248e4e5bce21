#!/usr/bin/env bash
# Import time and peak memory (maximum resident set, /usr/bin/time -v) of a 110M-parameter
# Llama of stories110M's shape (dim 768, 12 layers, 12 heads, MLP 2048, vocab 32000, tied;
# random weights) stored as (a) f32 safetensors, (b) bf16 safetensors, (c) Q8_0 GGUF, and for
# comparison (d) f32 GGUF, each through `flextron import --from hf|gguf`.
# usage: bench/import_speed.sh [WORK_DIR=/tmp/flextron_import_bench]
# The model is written by a small Python generator (standard library only): one 1M-float block
# of N(0, 0.02) values repeated, which is all an import-speed measurement needs.
set -euo pipefail
WORK=${1:-/tmp/flextron_import_bench}
FLEXTRON=${FLEXTRON:-$(cd "$(dirname "$0")/.." && pwd)/build/flextron}
mkdir -p "$WORK"
cd "$WORK"

python3 - <<'EOF'
import array, json, os, random, struct
dim, layers, heads, hidden, vocab = 768, 12, 12, 2048, 32000
config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": dim,
          "intermediate_size": hidden, "num_hidden_layers": layers,
          "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
          "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}
shapes = [("model.embed_tokens.weight", [vocab, dim])]
for l in range(layers):
    p = f"model.layers.{l}."
    shapes += [(p + "input_layernorm.weight", [dim]), (p + "post_attention_layernorm.weight", [dim])]
    shapes += [(p + f"self_attn.{n}_proj.weight", [dim, dim]) for n in "qkvo"]
    shapes += [(p + "mlp.gate_proj.weight", [hidden, dim]), (p + "mlp.up_proj.weight", [hidden, dim]),
               (p + "mlp.down_proj.weight", [dim, hidden])]
shapes.append(("model.norm.weight", [dim]))
random.seed(0)
block = array.array("f", [random.gauss(0.0, 0.02) for _ in range(1 << 20)]).tobytes()
ones = array.array("f", [1.0] * dim).tobytes()
def f32_bytes(n, norm):
    if norm: return ones[: 4 * n]
    out = block * (4 * n // len(block) + 1)
    return out[: 4 * n]
def to_bf16(b):  # the high halves of little-endian floats (truncation: fine for a benchmark)
    return memoryview(b).cast("H")[1::2].tobytes()
for dtype, width in (("F32", 4), ("BF16", 2)):
    d = f"hf_{dtype.lower()}"
    os.makedirs(d, exist_ok=True)
    json.dump(config, open(f"{d}/config.json", "w"))
    header, offset = {}, 0
    for name, shape in shapes:
        n = 1
        for s in shape: n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n * width]}
        offset += n * width
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(f"{d}/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, shape in shapes:
            n = 1
            for s in shape: n *= s
            b = f32_bytes(n, len(shape) == 1)
            f.write(b if dtype == "F32" else to_bf16(b))
print("parameters:", sum(eval("*".join(map(str, s))) for _, s in shapes))
EOF

# The GGUF files, written by flextron itself from the imported f32 model.
"$FLEXTRON" import --from hf --model hf_f32 --out native >/dev/null
"$FLEXTRON" export --model native --to gguf --gguf-type q8_0 --out model_q8_0.gguf >/dev/null
"$FLEXTRON" export --model native --to gguf --gguf-type f32 --out model_f32.gguf >/dev/null
ls -l hf_f32/model.safetensors hf_bf16/model.safetensors model_q8_0.gguf model_f32.gguf

measure() {  # label, import args...
  local label=$1; shift
  rm -rf out
  /usr/bin/time -v "$FLEXTRON" import "$@" --out out >/dev/null 2>time.txt
  printf '%-22s %8s s  %8.0f MB max RSS\n' "$label" \
    "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' time.txt)" \
    "$(awk '/Maximum resident set size/ {print $6 / 1024}' time.txt)"
}
echo "== flextron import (wall clock, peak resident memory)"
measure "(a) f32 safetensors" --from hf --model hf_f32
measure "(b) bf16 safetensors" --from hf --model hf_bf16
measure "(c) Q8_0 GGUF" --from gguf --model model_q8_0.gguf
measure "(d) f32 GGUF" --from gguf --model model_f32.gguf
