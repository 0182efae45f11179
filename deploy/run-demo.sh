#!/usr/bin/env bash
# The main job, for now: build and benchmark the full-size synapse UNETR++ on
# this machine's CPU (random weights, one 64x128x128 window, float32).
# The end-to-end segmentation demo replaces this once the service exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
./"${UPP_BUILD_DIR:-build}"/tools/upp-bench-model --preset synapse --threads "$(nproc)" --runs 5
