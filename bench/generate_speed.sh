#!/usr/bin/env bash
# Decode and prefill tokens/s of `flextron generate` (greedy), median of R runs, for one model.
# usage: bench/generate_speed.sh MODEL_DIR [MAX_TOKENS=200] [RUNS=5] [extra generate flags...]
# Prints a table and writes bench_generate.json in the current directory.
set -euo pipefail
MODEL=$1; TOKENS=${2:-200}; RUNS=${3:-5}; shift $(( $# < 3 ? $# : 3 ))
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
results=()
for i in $(seq "$RUNS"); do
  results+=("$("$FLEXTRON" generate --model "$MODEL" --prompt "" --max-tokens "$TOKENS" --temperature 0 --json "$@" |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["timings"]; print(t["decode_tokens_per_second"], t["prefill_tokens_per_second"])')")
done
printf '%s\n' "${results[@]}" | python3 -c '
import json, statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
decode = [r[0] for r in rows]
out = {"runs": len(rows), "decode_tokens_per_second": decode, "median_decode_tokens_per_second": statistics.median(decode)}
print("run  decode tok/s"); [print(f"{i+1:3d}  {d:10.1f}") for i, d in enumerate(decode)]
print("median decode tok/s: %.1f" % out["median_decode_tokens_per_second"])
json.dump(out, open("bench_generate.json", "w"), indent=2)'
