#!/usr/bin/env bash
# The fast runtime at every weight format (f32, q8_0, q4_0) beside llama.cpp at the same bits,
# on the same weights, in the same rounds (medians of interleaved runs), 1 and 2 threads:
# decode tok/s (128 tokens after one prompt token), prefill tok/s (128 tokens in one pass), and
# the budget-0.5 (uniform) sub-network's decode time against the full model's.
# usage: bench/quant_speed.sh MODEL_DIR LLAMA_BENCH [REPEAT=5] [OUT_DIR=bench_quant]
#   LLAMA_BENCH: the path of llama.cpp's llama-bench, built outside this project. The GGUF files
#   it runs are exported from MODEL_DIR by flextron itself (export --gguf-type f32|q8_0|q4_0:
#   every matrix in that format, the embedding and the LM head included), so both engines read
#   the same blocks. llama-bench runs once per round (-r 1) inside `flextron bench`'s rounds.
#   A model at real shapes with random weights: bench/random_llama.py (speed does not depend on
#   the values), e.g. bench/random_llama.py /tmp/m110 (stories110M's shape) and
#   flextron import --from hf --model /tmp/m110 --out /tmp/m110n.
# Writes OUT_DIR/{decode,prefill}_FORMAT_tTHREADS.json and OUT_DIR/summary.json, and prints the
# table of ratios.
set -euo pipefail
MODEL=$1; LLAMA_BENCH=$2; REPEAT=${3:-5}; OUT=${4:-bench_quant}
FLEXTRON=${FLEXTRON:-$(cd "$(dirname "$0")/.." && pwd)/build/flextron}
mkdir -p "$OUT"
for fmt in f32 q8_0 q4_0; do
  [ -f "$OUT/model_$fmt.gguf" ] || "$FLEXTRON" export --model "$MODEL" --to gguf --gguf-type "$fmt" \
    --out "$OUT/model_$fmt.gguf" >/dev/null
done
for t in 1 2; do
  for fmt in f32 q8_0 q4_0; do
    echo "== $fmt, $t thread(s): decode"
    "$FLEXTRON" bench --model "$MODEL" --quant "$fmt" --budgets 1,0.5 --prompt-tokens 1 \
      --gen-tokens 128 --repeat "$REPEAT" --threads "$t" \
      --reference-cmd "$LLAMA_BENCH -m $OUT/model_$fmt.gguf -t $t -p 0 -n 128 -r 1" \
      --reference-regex 'tg128 *\| *([0-9.]+)' --json-out "$OUT/decode_${fmt}_t$t.json"
    echo "== $fmt, $t thread(s): prefill"
    "$FLEXTRON" bench --model "$MODEL" --quant "$fmt" --budgets 1 --prompt-tokens 128 \
      --gen-tokens 1 --repeat "$REPEAT" --threads "$t" \
      --reference-cmd "$LLAMA_BENCH -m $OUT/model_$fmt.gguf -t $t -p 128 -n 0 -r 1" \
      --reference-regex 'pp128 *\| *([0-9.]+)' --json-out "$OUT/prefill_${fmt}_t$t.json"
  done
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = []
for t in (1, 2):
    for fmt in ("f32", "q8_0", "q4_0"):
        d = json.load(open(os.path.join(out, f"decode_{fmt}_t{t}.json")))
        p = json.load(open(os.path.join(out, f"prefill_{fmt}_t{t}.json")))
        full = [r for r in d["results"] if r["budget"] == 1][0]
        half = [r for r in d["results"] if r["budget"] == 0.5][0]
        pre = p["results"][0]
        rows.append({"format": fmt, "threads": t,
                     "decode": full["decode_tokens_per_second"],
                     "decode_llama_cpp": d["reference"]["tokens_per_second"],
                     "prefill": pre["prefill_tokens_per_second"],
                     "prefill_llama_cpp": p["reference"]["tokens_per_second"],
                     "half_decode_time_vs_full": half["decode_time_vs_full"],
                     "weights_bytes": full["weights_bytes"]})
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"{'format':6} {'thr':>3} {'tg tok/s':>9} {'llama.cpp':>9} {'ratio':>6} {'pp tok/s':>9} "
      f"{'llama.cpp':>9} {'ratio':>6} {'0.5 time':>8}")
for r in rows:
    print(f"{r['format']:6} {r['threads']:3d} {r['decode']:9.1f} {r['decode_llama_cpp']:9.1f} "
          f"{r['decode'] / r['decode_llama_cpp']:6.2f} {r['prefill']:9.1f} "
          f"{r['prefill_llama_cpp']:9.1f} {r['prefill'] / r['prefill_llama_cpp']:6.2f} "
          f"{r['half_decode_time_vs_full']:8.3f}")
PY
