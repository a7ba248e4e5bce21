#!/usr/bin/env bash
# Fuzzes every reader with clang's libFuzzer under AddressSanitizer and UBSan.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 s, every target)
# Builds in build-fuzz/ (clang, -DFLEXTRON_FUZZ=ON), writes the seed corpus, then runs each
# fuzz_<target> for SECONDS on fuzz-corpus/<target> (seeds, fuzz/regressions/<target>, and what
# earlier runs found). Inputs that crash are kept in fuzz-findings/<target>/; commit a minimised
# one to fuzz/regressions/<target>/ with its fix so the test suite replays it from then on.
# Prints per target: executions, executions per second, edges covered, corpus size and
# findings, and writes the same as fuzz-findings/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-600}
shift || true
scripts/setup.sh
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is needed (apt install clang)" >&2; exit 1; }
export BUILD_DIR=build-fuzz
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFLEXTRON_FUZZ=ON >/dev/null
fi
cmake --build "$BUILD_DIR" --parallel "$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$BUILD_DIR/flextron_fuzz" seeds "$BUILD_DIR/fuzz-seeds"
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <("$BUILD_DIR/flextron_fuzz" list)
mkdir -p fuzz-findings
summary="["
status=0
for target in "${TARGETS[@]}"; do
  corpus=fuzz-corpus/$target
  findings=fuzz-findings/$target
  mkdir -p "$corpus" "$findings"
  cp -n "$BUILD_DIR/fuzz-seeds/$target"/* "$corpus"/ 2>/dev/null || true
  [ -d "fuzz/regressions/$target" ] && cp -n "fuzz/regressions/$target"/* "$corpus"/ 2>/dev/null || true
  log=fuzz-findings/$target.log
  set +e
  "$BUILD_DIR/fuzz_$target" -max_total_time="$SECONDS_PER_TARGET" -max_len=262144 -timeout=20 \
    -rss_limit_mb=4096 -artifact_prefix="$findings/" -print_final_stats=1 "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  per_s=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  size=$(find "$corpus" -type f | wc -l)
  found=$(find "$findings" -type f | wc -l)
  printf '%-16s %10s execs %8s/s  coverage %6s edges  corpus %6s  findings %s%s\n' "$target" \
    "${execs:-0}" "${per_s:-0}" "${cov:-0}" "$size" "$found" "$([ $rc -ne 0 ] && echo "  (exit $rc, see $log)")"
  [ "$summary" = "[" ] || summary+=","
  summary+="{\"target\":\"$target\",\"seconds\":$SECONDS_PER_TARGET,\"execs\":${execs:-0},"
  summary+="\"execs_per_s\":${per_s:-0},\"coverage_edges\":${cov:-0},\"corpus\":$size,\"findings\":$found,\"exit\":$rc}"
  [ $rc -eq 0 ] || status=1
done
echo "$summary]" >fuzz-findings/summary.json
exit $status
