#!/usr/bin/env bash
# Self-speculative decoding beside plain decoding (`flextron bench --speculative`), for each model
# directory given: greedy and temperature 0.8, at 1 and 2 threads. Each figure is the median over
# REPEAT interleaved repeats of 8 prompts x TOKENS new tokens; greedy runs also check that the
# texts are identical. Extra flags after -- go to every run (--draft-budget 0.4, --draft-tokens 4).
# usage: bench/speculative_speed.sh MODEL_DIR... [-- flags]
# env: TOKENS=256 REPEAT=3 THREADS="1 2" TEMPERATURES="0 0.8" OUT=bench_speculative.json
set -euo pipefail
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
TOKENS=${TOKENS:-256}; REPEAT=${REPEAT:-3}; THREADS=${THREADS:-"1 2"}
TEMPERATURES=${TEMPERATURES:-"0 0.8"}; OUT=${OUT:-bench_speculative.json}
models=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  models+=("$1"); shift
done
[ ${#models[@]} -gt 0 ] || { echo "usage: $0 MODEL_DIR... [-- flags]" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
n=0
for model in "${models[@]}"; do
  for threads in $THREADS; do
    for temperature in $TEMPERATURES; do
      n=$((n + 1))
      "$FLEXTRON" bench --model "$model" --speculative --gen-tokens "$TOKENS" --repeat "$REPEAT" \
        --threads "$threads" --temperature "$temperature" --json-out "$tmp/$n.json" \
        "${extra[@]}" >/dev/null
    done
  done
done
python3 - "$tmp" "$OUT" <<'PY'
import glob, json, os, sys
rows = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")),
                                           key=lambda f: int(os.path.basename(f)[:-5]))]
print(f"{'model':32} {'thr':>3} {'temp':>4} {'plain':>8} {'spec':>8} {'x':>6} {'accept':>6} "
      f"{'tok/pass':>8} {'same':>4}  draft")
for r in rows:
    same = "-" if r["temperature"] > 0 else ("yes" if r["mismatches"] == 0 else "NO")
    print(f"{os.path.basename(r['model'].rstrip('/')):32} {r['threads']:3d} {r['temperature']:4.1f} "
          f"{r['plain_median']:8.1f} {r['speculative_median']:8.1f} {r['speedup']:5.2f}x "
          f"{100 * r['acceptance_rate']:5.0f}% {r['tokens_per_round']:8.2f} {same:>4}  "
          f"{r['draft']['draft']} ({r['draft']['architecture']})")
json.dump(rows, open(sys.argv[2], "w"), indent=2)
print("written:", sys.argv[2])
PY
