#!/usr/bin/env bash
# The fast runtime's prefill and decode tokens/s at several budgets, beside a reference engine
# run on the same model in the same rounds (medians), as `flextron bench` measures them.
# usage: bench/runtime_speed.sh MODEL_DIR [REFERENCE_CMD] [GEN_TOKENS=256] [REPEAT=5] [THREADS=2]
#   REFERENCE_CMD: any engine's command line, run through the shell once per round; its tokens/s
#   are read from its output with --reference-regex (llama2.c's "achieved tok/s: N" by default).
#   The project never fetches or builds a reference engine: bring your own, e.g.
#   bench/runtime_speed.sh models/stories260K \
#     "OMP_NUM_THREADS=2 ~/llama2.c/run model.bin -z tok.bin -t 0 -n 256 -i ''"
# Decode runs from BOS (one prompt token, as the reference starts); prefill is measured apart,
# 128 prompt tokens on the fast and the torch runtimes. Writes bench_runtime_decode.json and
# bench_runtime_prefill_{fast,torch}.json in the current directory.
set -euo pipefail
MODEL=$1; REFERENCE=${2:-}; GEN=${3:-256}; REPEAT=${4:-5}; THREADS=${5:-2}
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
BUDGETS=${BUDGETS:-1,0.75,0.5,0.25}
ref_args=()
[ -n "$REFERENCE" ] && ref_args=(--reference-cmd "$REFERENCE")
echo "== decode: $GEN tokens from BOS"
"$FLEXTRON" bench --model "$MODEL" --budgets "$BUDGETS" --prompt-tokens 1 --gen-tokens "$GEN" \
  --repeat "$REPEAT" --threads "$THREADS" "${ref_args[@]}" --json-out bench_runtime_decode.json
# The runtimes apart: interleaved with the torch forward, the fast runtime's threads met
# LibTorch's and OpenBLAS's still spinning and measured up to 2x slow.
for rt in fast torch; do
  echo "== prefill: 128 prompt tokens in one pass, $rt runtime"
  "$FLEXTRON" bench --model "$MODEL" --budgets "$BUDGETS" --prompt-tokens 128 --gen-tokens 32 \
    --repeat "$REPEAT" --threads "$THREADS" --runtime "$rt" --json-out "bench_runtime_prefill_$rt.json"
done
