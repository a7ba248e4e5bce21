#!/usr/bin/env bash
# Import time and peak memory (maximum resident set, /usr/bin/time -v) of a 110M-parameter
# Llama of stories110M's shape (dim 768, 12 layers, 12 heads, MLP 2048, vocab 32000, tied;
# random weights) stored as (a) f32 safetensors, (b) bf16 safetensors, (c) Q8_0 GGUF, and for
# comparison (d) f32 GGUF, each through `flextron import --from hf|gguf`.
# usage: bench/import_speed.sh [WORK_DIR=/tmp/flextron_import_bench]
# The model is written by bench/random_llama.py (random weights: all an import-speed measurement
# needs).
set -euo pipefail
WORK=${1:-/tmp/flextron_import_bench}
FLEXTRON=${FLEXTRON:-$(cd "$(dirname "$0")/.." && pwd)/build/flextron}
mkdir -p "$WORK"
BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$WORK"

"$BENCH_DIR/random_llama.py" hf_f32 --dtype F32
"$BENCH_DIR/random_llama.py" hf_bf16 --dtype BF16

# The GGUF files, written by flextron itself from the imported f32 model.
"$FLEXTRON" import --from hf --model hf_f32 --out native >/dev/null
"$FLEXTRON" export --model native --to gguf --gguf-type q8_0 --out model_q8_0.gguf >/dev/null
"$FLEXTRON" export --model native --to gguf --gguf-type f32 --out model_f32.gguf >/dev/null
ls -l hf_f32/model.safetensors hf_bf16/model.safetensors model_q8_0.gguf model_f32.gguf

measure() {  # label, import args...
  local label=$1; shift
  rm -rf out
  /usr/bin/time -v "$FLEXTRON" import "$@" --out out >/dev/null 2>time.txt
  printf '%-22s %8s s  %8.0f MB max RSS\n' "$label" \
    "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' time.txt)" \
    "$(awk '/Maximum resident set size/ {print $6 / 1024}' time.txt)"
}
echo "== flextron import (wall clock, peak resident memory)"
measure "(a) f32 safetensors" --from hf --model hf_f32
measure "(b) bf16 safetensors" --from hf --model hf_bf16
measure "(c) Q8_0 GGUF" --from gguf --model model_q8_0.gguf
measure "(d) f32 GGUF" --from gguf --model model_f32.gguf
