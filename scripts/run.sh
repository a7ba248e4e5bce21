#!/usr/bin/env bash
# The main job on the embedded default, one pipeline whose finished stages are cached in
# ${RUN_DIR:-runs/default} and skipped on the next run:
#   1. install what is missing (scripts/setup.sh) and build
#   2. corpus: English text installed by Debian's python3.11-doc (the reST sources of the Python
#      documentation); the FAQ is held out for evaluation
#   3. pretrain the default base model (preset "small", resumable if killed)
#   4. convert it into a Flextron model (rank, elastic training on 7.63% of the pretraining
#      tokens, latency profile, routers, joint fine-tune; every stage cached)
#   5. evaluate every budget and router kind beside the base model: perplexity on the FAQ and a
#      next-words multiple-choice task made from it; the report (table, JSON, SVG plots)
#   6. generate from one set of weights at three budgets
# Pass --preset/--tokens to change the size, or --model DIR to skip pretraining and use your own.
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=small
TOKENS=""
MODEL=""
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    *) echo "usage: scripts/run.sh [--preset NAME] [--tokens N] [--model DIR]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
if ! dpkg-query -W -f='${Status}' python3.11-doc 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: installing python3.11-doc (the default training text)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3.11-doc >/dev/null
fi
scripts/build.sh >/dev/null
FLEXTRON=${BUILD_DIR:-build}/flextron
RUN_DIR=${RUN_DIR:-runs/default}
mkdir -p "$RUN_DIR"

stage() { echo; echo "== $* =="; }

stage "corpus"
SOURCES=/usr/share/doc/python3.11/html/_sources
if [ ! -f "$RUN_DIR/corpus/train.txt" ]; then
  mkdir -p "$RUN_DIR/corpus"
  find "$SOURCES" -name '*.rst.txt' -not -path '*/faq/*' -print0 | sort -z | xargs -0 cat > "$RUN_DIR/corpus/train.txt.tmp"
  find "$SOURCES/faq" -name '*.rst.txt' -print0 | sort -z | xargs -0 cat > "$RUN_DIR/corpus/heldout.txt"
  mv "$RUN_DIR/corpus/train.txt.tmp" "$RUN_DIR/corpus/train.txt"
fi
ls -l "$RUN_DIR/corpus"

if [ -z "$MODEL" ]; then
  MODEL="$RUN_DIR/base-$PRESET"
  stage "pretrain ($PRESET)"
  if [ -f "$MODEL/training.json" ]; then
    echo "cached: $MODEL"
  else
    RESUME=()
    [ -d "$MODEL/checkpoint" ] || [ -d "$MODEL/checkpoint.old" ] && RESUME=(--resume)
    "$FLEXTRON" pretrain --data "$RUN_DIR/corpus/train.txt" --out "$MODEL" --preset "$PRESET" \
      ${TOKENS:+--tokens "$TOKENS"} "${RESUME[@]}"
  fi
fi

stage "perplexity of the base model on held-out text (Python FAQ)"
"$FLEXTRON" perplexity --model "$MODEL" --data "$RUN_DIR/corpus/heldout.txt" --ctx 256 --json > "$RUN_DIR/perplexity.json"
"$FLEXTRON" perplexity --model "$MODEL" --data "$RUN_DIR/corpus/heldout.txt" --ctx 256

FLEX="$RUN_DIR/flextron"
stage "convert to Flextron (rank -> elastic -> profile -> routers -> joint)"
# Budgets: six from the smallest latency fraction this machine reaches to 1 (--budgets auto).
"$FLEXTRON" convert --model "$MODEL" --data "$RUN_DIR/corpus/train.txt" --out "$FLEX" \
  --token-fraction 0.0763

stage "evaluation at every budget and router kind"
TASK="$RUN_DIR/faq_next_words.jsonl"
[ -f "$TASK" ] || "$FLEXTRON" make-task --data "$RUN_DIR/corpus/heldout.txt" --out "$TASK" --examples 200
REPORT="$RUN_DIR/report"
if [ -f "$REPORT/report.json" ] && [ "$REPORT/report.json" -nt "$FLEX/model.safetensors" ]; then
  echo "cached: $REPORT"
  sed -n '3,/^$/p' "$REPORT/report.md"
else
  "$FLEXTRON" eval --model "$FLEX" --ppl "$RUN_DIR/corpus/heldout.txt" \
    --ctx 256 --ppl-tokens 16384 --tasks "$TASK" --baseline "base=$MODEL" --report "$REPORT"
fi

stage "one set of weights, three budgets (static router, greedy)"
LOWEST=$(sed -n 's/.*"smallest_latency_fraction": \([0-9.]*\).*/\1/p' "$FLEX/convert.json")
LOW=$(awk "BEGIN{b = int($LOWEST * 100 + 0.999) / 100; printf \"%.2f\", b}")
MID=$(awk "BEGIN{printf \"%.2f\", ($LOW + 1) / 2}")
for budget in "$LOW" "$MID" 1.0; do
  echo "-- budget $budget"
  "$FLEXTRON" generate --model "$FLEX" --budget "$budget" --prompt "To install a package" \
    --max-tokens 40 --temperature 0
  echo
done
echo "results in $RUN_DIR: report/report.md (table and plots), report/report.json, flextron/ (the model)"
