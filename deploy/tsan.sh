#!/usr/bin/env bash
# ThreadSanitizer build of the server's concurrency tests (batcher, hostile
# clients, the in-process server): every reactor, pool, worker and watchdog
# path under TSan. LibTorch, OpenMP, oneDNN and OpenBLAS are not instrumented;
# deploy/tsan.supp names them so that only our code's races are reported.
# Debian's Abseil is not instrumented either: tests/testing/tsan_absl_shim.cc
# tells TSan what absl::Mutex synchronises.
# Usage: deploy/tsan.sh [GTEST_FILTER]     (about 25 minutes cold on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${UPP_TSAN_BUILD_DIR:-build-tsan}"
FILTER="${1:-*}"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DUPP_TSAN_ABSL_SHIM=ON -DUPP_OPENMP=OFF >/dev/null
cmake --build "$BUILD" -j "${UPP_JOBS:-2}" --target batcher_tests hostile_tests server_tests
export TSAN_OPTIONS="suppressions=$PWD/deploy/tsan.supp halt_on_error=1 second_deadlock_stack=1 history_size=4"
status=0
for t in batcher_tests hostile_tests server_tests; do
  echo "tsan: $t"
  "$BUILD/tests/server/$t" --gtest_filter="$FILTER" > "$BUILD/$t.log" 2>&1 || status=1
  grep -E "^(SUMMARY|\[  PASSED|\[  FAILED)" "$BUILD/$t.log" || true
done
exit $status
