#!/usr/bin/env bash
# Configures and builds unetrpp-serve in ./build (Release, Ninja, ccache when present).
# Extra arguments go to the CMake configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${UPP_BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j "${UPP_JOBS:-2}"
