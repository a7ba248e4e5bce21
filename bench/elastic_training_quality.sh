#!/usr/bin/env bash
# Held-out perplexity of the smallest, 50% and full architectures before and after elastic
# training: rank a pretrained base, train it elastically with FRACTION of its pretraining tokens
# (its training.json), and evaluate both ranked models at the same three architectures.
# usage: bench/elastic_training_quality.sh BASE_MODEL TRAIN_TEXT HELDOUT_TEXT [FRACTION=0.0763] [WORK=bench_elastic_quality] [train-elastic flags...]
# Prints a table and writes WORK/elastic_quality.json.
set -euo pipefail
BASE=$1; TRAIN=$2; HELDOUT=$3; FRACTION=${4:-0.0763}; WORK=${5:-bench_elastic_quality}
shift $(( $# < 5 ? $# : 5 ))
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
mkdir -p "$WORK"
[ -f "$WORK/ranked/flextron.json" ] ||
  "$FLEXTRON" rank --model "$BASE" --data "$TRAIN" --out "$WORK/ranked" --samples 256 >/dev/null
[ -f "$WORK/elastic/training.json" ] ||
  "$FLEXTRON" train-elastic --model "$WORK/ranked" --data "$TRAIN" --out "$WORK/elastic" \
    --token-fraction "$FRACTION" "$@"
rows=()
for model in ranked elastic; do
  for arch in smallest half full; do
    case $arch in
      smallest) flags=(--arch mlp=0.25,attn=0.25) ;;
      half) flags=(--arch mlp=0.5,attn=0.5) ;;
      full) flags=() ;;
    esac
    ppl=$("$FLEXTRON" perplexity --model "$WORK/$model" --data "$HELDOUT" --ctx 256 --json "${flags[@]}" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["perplexity"])')
    rows+=("$model $arch $ppl")
  done
done
printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys
ppl = {}
for line in sys.stdin:
    model, arch, value = line.split(); ppl.setdefault(arch, {})[model] = float(value)
print("architecture   ppl before   ppl after   (held-out, llama.cpp convention, ctx 256)")
for arch in ("smallest", "half", "full"):
    before, after = ppl[arch]["ranked"], ppl[arch]["elastic"]
    print(f"{arch:12s} {before:12.2f} {after:11.2f}")
json.dump(ppl, open(sys.argv[1], "w"), indent=2)' "$WORK/elastic_quality.json"
