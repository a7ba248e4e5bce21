#!/usr/bin/env bash
# Converting a model without its training data (docs/self-distillation.md): does distilling on
# the base's own samples beat training on other text, and pruning alone?
#   self         convert --self-distill N: the base samples N tokens, elastic training distills
#                (KL) from the frozen base on them
#   shifted-B    the same conversion on SHIFTED text (default tinyshakespeare), its static
#                router's sub-network at budget B
#   pruned-B     the self-distilled static shape at B cut from the ranked base, no training
#   uniform      uniform widths at B (the eval's "uniform" rows)
# All scored on held-out text the base samples with another seed, with quality-target rows
# (predicted against measured perplexity), and greedy text from each sub-network.
# Usage: bench/self_distill.sh MODEL OUT [--tokens N] [--shifted FILE] [--targets T1,T2,...]
#        MODEL: a model directory (flextron import ...); BUILD_DIR as for scripts/.
# Output: OUT/report/{report.md,report.json,...}, OUT/greedy.md, OUT/settings.json.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/self_distill.sh MODEL OUT [--tokens N] [--shifted FILE] [--targets T,...]" >&2; exit 2; }
MODEL=$1 OUT=$2
shift 2
TOKENS=500000
SHIFTED=../shared/data/corpora/tinyshakespeare.txt
TARGETS="ppl+2%,ppl+10%,loss+0.3"
while [ $# -gt 0 ]; do
  case "$1" in
    --tokens) TOKENS=$2; shift 2 ;;
    --shifted) SHIFTED=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    *) echo "bench/self_distill.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
FLEXTRON=${BUILD_DIR:-build}/flextron
mkdir -p "$OUT"
HELDOUT="$OUT/heldout.txt"

echo "== held-out text: the base's own samples, seed 4242 (the conversion samples with seed 1234) =="
"$FLEXTRON" sample-corpus --model "$MODEL" --tokens 20000 --seed 4242 --out "$HELDOUT"

echo "== convert --self-distill $TOKENS (and $TOKENS training tokens) =="
"$FLEXTRON" convert --model "$MODEL" --self-distill "$TOKENS" --tokens "$TOKENS" --out "$OUT/self"
echo "== convert on $SHIFTED ($TOKENS training tokens) =="
"$FLEXTRON" convert --model "$MODEL" --data "$SHIFTED" --tokens "$TOKENS" --out "$OUT/shifted"

# Budgets 0.5 and 0.7, or, where 0.5 is below the smallest reachable fraction, that fraction and
# the one midway to 1 (as bench/paper_table.sh).
LOWEST=$(sed -n 's/.*"smallest_latency_fraction": \([0-9.]*\).*/\1/p' "$OUT/self/convert.json")
read -r B1 B2 < <(awk "BEGIN{low = int($LOWEST * 100 + 0.999) / 100; b1 = (low > 0.5) ? low : 0.5;
  b2 = (0.7 >= b1 + 0.1) ? 0.7 : (b1 + 1) / 2; printf \"%.2f %.2f\\n\", b1, b2}")
echo "budgets: $B1 $B2 (smallest reachable: $LOWEST)"
BASELINES=("base=$MODEL")
for B in $B1 $B2; do
  [ -f "$OUT/self-$B/architecture.json" ] ||
    "$FLEXTRON" extract --model "$OUT/self" --budget "$B" --out "$OUT/self-$B"
  [ -f "$OUT/pruned-$B/architecture.json" ] ||
    "$FLEXTRON" extract --model "$OUT/self/stages/rank" --arch "$OUT/self-$B/architecture.json" \
      --out "$OUT/pruned-$B"
  [ -f "$OUT/shifted-$B/architecture.json" ] ||
    "$FLEXTRON" extract --model "$OUT/shifted" --budget "$B" --out "$OUT/shifted-$B"
  BASELINES+=("shifted-$B=$OUT/shifted-$B" "pruned-$B=$OUT/pruned-$B")
done

echo "== evaluation: static and uniform at $B1,$B2, quality targets $TARGETS, the baselines =="
"$FLEXTRON" eval --model "$OUT/self" --budgets "$B1,$B2,1.0" --kinds static,uniform \
  --quality-targets "$TARGETS" --ppl "$HELDOUT" --ctx 256 --baseline "${BASELINES[@]}" \
  --report "$OUT/report"

echo "== greedy text, 80 tokens from \"Once upon a time\" =="
{
  echo "# Greedy text at each budget (\"Once upon a time\", 80 tokens)"
  for subject in "base:$MODEL" "self-$B1:$OUT/self-$B1" "self-$B2:$OUT/self-$B2" \
                 "shifted-$B1:$OUT/shifted-$B1" "shifted-$B2:$OUT/shifted-$B2" \
                 "pruned-$B1:$OUT/pruned-$B1" "pruned-$B2:$OUT/pruned-$B2"; do
    echo
    echo "## ${subject%%:*}"
    echo
    "$FLEXTRON" generate --model "${subject#*:}" --prompt "Once upon a time" --max-tokens 80 \
      --temperature 0 | tr '\n' ' ' | sed 's/^/> /'
    echo
  done
} > "$OUT/greedy.md"
cat > "$OUT/settings.json" <<JSON
{"model": "$MODEL", "self_distill_tokens": $TOKENS, "training_tokens": $TOKENS,
 "shifted_data": "$SHIFTED", "heldout": {"tokens": 20000, "seed": 4242},
 "budgets": [$B1, $B2], "quality_targets": "$TARGETS"}
JSON
echo "report: $OUT/report/report.md; greedy text: $OUT/greedy.md"
