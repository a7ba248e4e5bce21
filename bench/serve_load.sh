#!/usr/bin/env bash
# Load test of `flextron serve` on MODEL_DIR: starts the server on a free loopback port, runs
# serve_load from a second process (16 clients, mixed budgets), stops the server with SIGTERM.
# usage: bench/serve_load.sh MODEL_DIR [serve_load flags...]   (BUILD_DIR=build by default,
# configured with -DFLEXTRON_BUILD_BENCH=ON). Writes serve_load.json in the current directory.
set -euo pipefail
MODEL=$1; shift
BUILD_DIR=${BUILD_DIR:-$(dirname "$0")/../build}
LOG=$(mktemp)
"$BUILD_DIR/flextron" serve --model "$MODEL" --port 0 --quiet ${SERVE_FLAGS:-} >"$LOG.out" 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  PORT=$(sed -n 's/^listening on //p' "$LOG.out")
  [ -n "$PORT" ] && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
"$BUILD_DIR/serve_load" --port "$PORT" "$@"
kill -TERM $SERVER
wait $SERVER
