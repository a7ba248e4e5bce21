#!/usr/bin/env bash
# Tokenizer throughput (MB/s, best of R runs) on one text: the SentencePiece library
# (llama2_tokenizer.model) against our BPE engine on the same Llama-2 vocabulary, through the
# GGUF path (score merges) and through the tokenizer.json GGUF import writes (rank merges),
# plus GPT-2 byte-level BPE (vocab.json + merges.txt). Token counts must agree for the Llama rows.
# usage: bench/tokenizer_speed.sh [TEXT=../shared/data/corpora/tinyshakespeare.txt] [RUNS=3]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${DATA:-$ROOT/../shared/data}
TEXT=${1:-$DATA/corpora/tinyshakespeare.txt}; RUNS=${2:-3}
FLEXTRON=${FLEXTRON:-$ROOT/build/flextron}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
# The tokenizer.json that `flextron import` would write for the llama-spm vocabulary.
"$FLEXTRON" tokenizer encode --model "$DATA/tokenizers/llama.cpp/ggml-vocab-llama-spm.gguf" \
  --encode-file /dev/null --save "$WORK/llama-json" >/dev/null
models=("$DATA/tokenizers/llama2_tokenizer.model"
        "$DATA/tokenizers/llama.cpp/ggml-vocab-llama-spm.gguf"
        "$WORK/llama-json"
        "$DATA/tokenizers/gpt2_vocab.json")
for m in "${models[@]}"; do
  [ "$(basename "$m")" = gpt2_vocab.json ] && { cp "$m" "$WORK/vocab.json"; cp "$DATA/tokenizers/gpt2_merges.txt" "$WORK/merges.txt"; m=$WORK/vocab.json; }
  for i in $(seq "$RUNS"); do "$FLEXTRON" tokenizer encode --model "$m" --encode-file "$TEXT" --json; done
done | python3 -c '
import json, sys
best = {}
for line in sys.stdin:
    r = json.loads(line)
    if r["kind"] not in best or r["mb_per_s"] > best[r["kind"]]["mb_per_s"]: best[r["kind"]] = r
print("%-28s %10s %10s %8s" % ("tokenizer", "tokens", "seconds", "MB/s"))
for k, r in best.items(): print("%-28s %10d %10.3f %8.2f" % (k, r["tokens"], r["seconds"], r["mb_per_s"]))
json.dump(list(best.values()), open("bench_tokenizer.json", "w"), indent=2)'
