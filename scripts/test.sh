#!/usr/bin/env bash
# The test command: install what is missing, build, run the whole suite through CTest.
#   scripts/test.sh              the Release build in build/ (what CI runs)
#   scripts/test.sh --sanitize   the same suite built with AddressSanitizer and UBSan, in
#                                build-sanitize/ (slower: about 2-3x the build and the run)
set -euo pipefail
cd "$(dirname "$0")/.."
CMAKE_ARGS=()
if [ "${1:-}" = "--sanitize" ]; then
  export BUILD_DIR=${BUILD_DIR:-build-sanitize}
  CMAKE_ARGS=(-DFLEXTRON_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
  # LibTorch keeps allocations alive until exit (its caches, registries): leaks are not ours.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
scripts/setup.sh
scripts/build.sh "${CMAKE_ARGS[@]}"
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "$(nproc)"
