#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install what is missing,
# build, run every test with CTest, fuzz the input parsers for a bounded time,
# then build the Docker image and test it as it runs (deploy/docker-test.sh),
# and the image made from a prebuilt package (the CUDA image's path,
# deploy/docker/prebuilt-image-test.sh).
# This is what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/check-format.sh
bash deploy/build.sh
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
ctest --test-dir "${UPP_BUILD_DIR:-build}" --output-on-failure -j "${UPP_JOBS:-2}" 2>&1 | tee "$LOG"
TOTAL=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$LOG" | tail -1)
# Fuzz the input parsers and the request logic for a bounded time (clang,
# ASan + UBSan): 3 targets.
bash deploy/fuzz.sh 30
# The image: built (cold on a fresh machine: the longest step) and run hardened.
bash deploy/docker-test.sh
bash deploy/docker/prebuilt-image-test.sh
echo "tests: $((TOTAL + 5)) passed, 0 failed"
