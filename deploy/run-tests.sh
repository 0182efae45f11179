#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine: install what is missing,
# build, run every test with CTest. This is what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
ctest --test-dir "${UPP_BUILD_DIR:-build}" --output-on-failure -j "${UPP_JOBS:-2}"
# Fuzz the input parsers for a bounded time (clang, ASan + UBSan).
bash deploy/fuzz.sh 30
