#!/usr/bin/env bash
# Model benchmark with its baseline in the same run: alternates upp-bench-model
# (ours) and tools/reference_unetrpp.py (the reference computation in PyTorch)
# ROUNDS times on one synapse window, so machine noise hits both alike.
# Usage: deploy/bench-model.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
THREADS="${2:-2}"
BIN="${UPP_BUILD_DIR:-build}/tools/upp-bench-model"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads=$THREADS"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  "$BIN" --preset synapse --threads "$THREADS" --runs 3 | tail -1 | sed 's/^/  ours fp32: /'
  # bf16 is refused where oneDNN cannot run it (AVX2-only CPUs): said, not fatal.
  { "$BIN" --preset synapse --threads "$THREADS" --runs 3 --precision bf16 2>&1 || true; } | tail -1 | sed 's/^/  ours bf16: /'
  "$PY" tools/reference_unetrpp.py bench --preset synapse --threads "$THREADS" --runs 3 | sed 's/^/  /'
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 "$PY" tools/reference_unetrpp.py bench --preset synapse --threads "$THREADS" --runs 3 | sed 's/^/  same, glibc malloc kept (MALLOC_MMAP_MAX_=0): /'
done
