#!/usr/bin/env bash
# The published UNETR++ code as the same-run baseline (issue: speed, measured
# against the published implementation). OFFICIAL is a folder laid out by hand
# and never committed (tools/bench_official.py says what it holds); nothing is
# downloaded here.
#   1. one synapse window, fp32: the official network, our PyTorch restatement and
#      upp-bench-model alternated ROUNDS times, with glibc's default malloc and
#      with freed memory kept (MALLOC_MMAP_MAX_=0, which PyTorch's CPU path needs
#      not to page-fault every activation afresh: the better baseline);
#   2. a 96 x 512 x 512 volume (D H W at the synapse spacing, so nothing is
#      resampled): MONAI's sliding window with the official network, then our
#      whole pipeline (upp-bench-pipeline) on a CT of the same grid.
# Usage: deploy/bench-official.sh OFFICIAL [ROUNDS] [THREADS] [--no-volume]
set -euo pipefail
cd "$(dirname "$0")/.."
OFFICIAL="${1:?usage: deploy/bench-official.sh OFFICIAL [ROUNDS] [THREADS] [--no-volume]}"
ROUNDS="${2:-3}"
THREADS="${3:-2}"
BUILD="${UPP_BUILD_DIR:-build}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads=$THREADS; $(date -u '+%F %H:%M UTC'); commit $(git rev-parse --short HEAD)"
run() { "$PY" tools/bench_official.py --official "$OFFICIAL" --threads "$THREADS" "$@"; }
echo "== one window, default malloc"
run window --rounds "$ROUNDS" --bench-model "$BUILD/tools/upp-bench-model"
echo "== one window, MALLOC_MMAP_MAX_=0"
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 run window --rounds "$ROUNDS" --bench-model "$BUILD/tools/upp-bench-model"
[ "${4:-}" = "--no-volume" ] && exit 0
echo "== 96 x 512 x 512: official network + MONAI sliding window (MALLOC_MMAP_MAX_=0)"
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 /usr/bin/time -f "peak_rss_kib=%M" \
  "$PY" tools/bench_official.py --official "$OFFICIAL" --threads "$THREADS" sliding --size 96 512 512
echo "== 512 x 512 x 96 @ 0.76 x 0.76 x 3 mm: upp-bench-pipeline"
/usr/bin/time -f "peak_rss_kib=%M" "$BUILD/tools/upp-bench-pipeline" --threads "$THREADS" --size 512 512 96 --spacing 0.76 0.76 3.0
