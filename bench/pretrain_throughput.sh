#!/usr/bin/env bash
# Training throughput (tokens/s) of each pretraining preset on this machine: a short run per
# preset on the same text and tokenizer, the median of the per-step rates after warm-up.
# usage: bench/pretrain_throughput.sh TEXT_FILE [STEPS=12] [PRESETS="tiny small medium"]
# Prints a table and writes bench_pretrain.json in the current directory.
set -euo pipefail
TEXT=$1; STEPS=${2:-12}; PRESETS=${3:-"tiny small medium"}
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$FLEXTRON" tokenizer train --data "$TEXT" --vocab-size 1024 --out "$WORK/tok" >/dev/null
for preset in $PRESETS; do
  # tokens per optimizer step of each preset (src/train/presets.cpp)
  case $preset in tiny|small) tokens_per_step=2048 ;; medium) tokens_per_step=16384 ;; base) tokens_per_step=65536 ;; esac
  "$FLEXTRON" pretrain --data "$TEXT" --out "$WORK/$preset" --preset "$preset" \
    --tokens $((STEPS * tokens_per_step)) --tokenizer "$WORK/tok/tokenizer.model" --eval-every 1000000 2>/dev/null || true
  cp "$WORK/$preset/train_log.jsonl" "$WORK/$preset.jsonl"
done
python3 - "$WORK" $PRESETS <<'PY'
import json, statistics, sys
work, presets = sys.argv[1], sys.argv[2:]
out = {}
print(f"{'preset':8s} {'median tok/s':>12s}")
for p in presets:
    recs = [json.loads(l) for l in open(f"{work}/{p}.jsonl") if '"train"' in l]
    # per-step rate from consecutive records, skipping the first two (warm-up)
    rates = [(b["tokens"] - a["tokens"]) / (b["elapsed_seconds"] - a["elapsed_seconds"])
             for a, b in zip(recs[1:], recs[2:]) if b["elapsed_seconds"] > a["elapsed_seconds"]]
    out[p] = {"steps": len(recs), "median_tokens_per_second": statistics.median(rates)}
    print(f"{p:8s} {out[p]['median_tokens_per_second']:12.0f}")
json.dump(out, open("bench_pretrain.json", "w"), indent=2)
PY
