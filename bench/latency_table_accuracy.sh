#!/usr/bin/env bash
# How well the latency table predicts whole decode steps, per model and runtime: `flextron profile
# --check N` measures N random architectures end to end beside the table's prediction, and the
# uncalibrated sum of block entries beside both. (This was a timed test until CI's machine showed
# that which of the two wins is a property of the machine's caches, not of the code: a benchmark
# reports it; tests/route/test_latency.cpp tests the fit itself on exact data.)
# usage: bench/latency_table_accuracy.sh WORK MODEL_DIR [MODEL_DIR...]
#   env: RUNTIMES="fast torch" CHECK=20 CONTEXTS=64,256 REPEATS=25
# Prints a table and writes WORK/latency_accuracy.json.
set -euo pipefail
WORK=$1; shift
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
RUNTIMES=${RUNTIMES:-fast torch}; CHECK=${CHECK:-20}; CONTEXTS=${CONTEXTS:-64,256}
REPEATS=${REPEATS:-25}
mkdir -p "$WORK"
tables=()
for model in "$@"; do
  for runtime in $RUNTIMES; do
    out="$WORK/$(basename "$model")_$runtime.json"
    "$FLEXTRON" profile --model "$model" --out "$out" --runtime "$runtime" --check "$CHECK" \
      --contexts "$CONTEXTS" --repeats "$REPEATS" >&2
    tables+=("$model=$out")
  done
done
printf '%s\n' "${tables[@]}" | python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    model, path = line.strip().split("=", 1)
    t = json.load(open(path))
    c = t["check"]
    rows.append({"model": model, "runtime": t["hardware"]["runtime"],
                 "threads": t["hardware"]["threads"],
                 "median_error": c["median_relative_error"], "max_error": c["max_relative_error"],
                 "uncalibrated_median_error": c["uncalibrated_median_relative_error"],
                 "architectures": len(c["architectures"])})
print("%-40s %-7s %-14s %-10s %s" % ("model", "runtime", "median error", "max error", "uncalibrated median"))
for r in rows:
    print("%-40s %-7s %13.1f%% %9.1f%% %10.1f%%" % (r["model"], r["runtime"], 100 * r["median_error"],
          100 * r["max_error"], 100 * r["uncalibrated_median_error"]))
json.dump({"rows": rows}, open(sys.argv[1], "w"), indent=2)' "$WORK/latency_accuracy.json"
