#!/usr/bin/env bash
# Elastic training throughput vs dense full-model training of the same model, side by side:
# alternating runs of `train-elastic` with the default sampling and with --p-full 1 (every step
# the full model: dense training through the same code), median tokens/s of R runs each.
# usage: bench/elastic_training_throughput.sh RANKED_MODEL TEXT [TOKENS=16384] [RUNS=3] [flags...]
# Prints a table and writes bench_elastic_training.json in the current directory.
set -euo pipefail
MODEL=$1; TEXT=$2; TOKENS=${3:-16384}; RUNS=${4:-3}; shift $(( $# < 4 ? $# : 4 ))
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
rows=()
for i in $(seq "$RUNS"); do
  for mode in elastic dense; do
    extra=(); [ "$mode" = dense ] && extra=(--p-full 1)
    "$FLEXTRON" train-elastic --model "$MODEL" --data "$TEXT" --out "$WORK/$mode$i" \
      --tokens "$TOKENS" --eval-every 100000 "${extra[@]}" "$@" 2>/dev/null
    rows+=("$mode $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tokens_per_second"])' "$WORK/$mode$i/training.json")")
  done
done
printf '%s\n' "${rows[@]}" | python3 -c '
import json, statistics, sys
runs = {"elastic": [], "dense": []}
for line in sys.stdin:
    mode, rate = line.split(); runs[mode].append(float(rate))
e, d = statistics.median(runs["elastic"]), statistics.median(runs["dense"])
print("mode     tokens/s (median)   runs")
for mode, med in (("elastic", e), ("dense", d)): print(f"{mode:8s} {med:17.1f}   {runs[mode]}")
print(f"elastic / dense throughput: {e / d:.2f}")
json.dump({"elastic_tokens_per_second": runs["elastic"], "dense_tokens_per_second": runs["dense"],
           "median_ratio": e / d}, open("bench_elastic_training.json", "w"), indent=2)'
