#!/usr/bin/env bash
# Routed vs uniform at every budget (issue 6's benchmark): on an elastically trained model,
# profile the latency table, train the static and dynamic routers, then for budgets 0.4..1.0
# measure, for uniform widths, the static router and the dynamic router: decode latency relative
# to the full model (timed side by side, interleaved, median of REPEAT generations of GEN tokens)
# and held-out perplexity (llama.cpp convention, ctx 256).
# usage: bench/router_budgets.sh ELASTIC_MODEL TRAIN_TEXT HELDOUT_TEXT [WORK=bench_router] [train-router flags...]
# Prints a table and writes WORK/router_budgets.json. A budget below the narrowest architecture's
# latency is reported as infeasible.
set -euo pipefail
MODEL=$1; TRAIN=$2; HELDOUT=$3; WORK=${4:-bench_router}
shift $(( $# < 4 ? $# : 4 ))
FLEXTRON=${FLEXTRON:-$(dirname "$0")/../build/flextron}
REPEAT=${REPEAT:-3}; GEN=${GEN:-128}
mkdir -p "$WORK"
[ -f "$WORK/latency.json" ] || "$FLEXTRON" profile --model "$MODEL" --out "$WORK/latency.json" >&2
[ -f "$WORK/routed/router.json" ] ||
  "$FLEXTRON" train-router --model "$MODEL" --latency "$WORK/latency.json" --data "$TRAIN" \
    --out "$WORK/routed" --budgets 0.5,0.6,0.7,0.8,0.9,1.0 --dynamic "$@" >&2

PROMPT="The Python documentation describes"
decode_ms() {  # extra flags -> ms per decoded token (1000 / tokens per second)
  "$FLEXTRON" generate --model "$WORK/routed" --prompt "$PROMPT" --max-tokens "$GEN" --json "$@" |
    python3 -c 'import json,sys; print(1000.0 / json.load(sys.stdin)["timings"]["decode_tokens_per_second"])'
}
: > "$WORK/rows.txt"; : > "$WORK/rows.clean"
for budget in 0.4 0.5 0.6 0.7 0.8 0.9 1.0; do
  for router in uniform static dynamic; do
    flags=(--budget "$budget" --router "$router")
    if ! "$FLEXTRON" generate --model "$WORK/routed" --prompt hi --max-tokens 1 "${flags[@]}" \
        >/dev/null 2>"$WORK/err.txt"; then
      echo "$budget $router infeasible $(tr ' ' '_' < "$WORK/err.txt")" >> "$WORK/rows.txt"
      continue
    fi
    ours=(); full=()
    for _ in $(seq "$REPEAT"); do  # interleaved, so both see the same machine load
      ours+=("$(decode_ms "${flags[@]}")")
      full+=("$(decode_ms)")
    done
    ppl=$("$FLEXTRON" perplexity --model "$WORK/routed" --data "$HELDOUT" --ctx 256 --json "${flags[@]}" |
      python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["perplexity"], j["selection"]["predicted_latency_fraction"])')
    echo "$budget $router ok $(IFS=,; echo "${ours[*]}") $(IFS=,; echo "${full[*]}") $ppl" >> "$WORK/rows.clean"
  done
done
python3 - "$WORK" <<'PY'
import json, statistics, sys
work = sys.argv[1]
rows = []
for line in open(f"{work}/rows.clean"):
    budget, router, status, ours, full, ppl, predicted = line.split()
    ours = [float(x) for x in ours.split(",")]; full = [float(x) for x in full.split(",")]
    rows.append({"budget": float(budget), "router": router,
                 "decode_ms": statistics.median(ours), "full_decode_ms": statistics.median(full),
                 "measured_latency_fraction": statistics.median(ours) / statistics.median(full),
                 "predicted_latency_fraction": float(predicted), "perplexity": float(ppl)})
infeasible = []
for line in open(f"{work}/rows.txt"):
    parts = line.split(maxsplit=3)
    if parts[2] == "infeasible":
        infeasible.append({"budget": float(parts[0]), "router": parts[1], "error": parts[3].strip().replace("_", " ")})
print(f"{'budget':>6} {'router':>8} {'predicted':>9} {'measured':>8} {'ms/token':>8} {'perplexity':>10}")
for r in rows:
    print(f"{r['budget']:6.1f} {r['router']:>8} {r['predicted_latency_fraction']:9.3f} "
          f"{r['measured_latency_fraction']:8.3f} {r['decode_ms']:8.3f} {r['perplexity']:10.2f}")
for r in infeasible:
    print(f"{r['budget']:6.1f} {r['router']:>8} infeasible: {r['error']}")
json.dump({"rows": rows, "infeasible": infeasible}, open(f"{work}/router_budgets.json", "w"), indent=2)
PY
