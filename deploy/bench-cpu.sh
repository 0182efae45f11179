#!/usr/bin/env bash
# Every CPU figure BENCHMARKS.md keeps per machine kind, in one run on this
# machine, each with its same-run baseline (the CPU kind varies between the
# project's machines: AVX2-only AMD EPYC, AVX-512 EPYC, AMX Xeon):
#   1. the machine: lscpu's model and the oneDNN ISA the kernels dispatch to;
#   2. one synapse window, ours fp32/bf16 vs the PyTorch restatement (deploy/bench-model.sh);
#   3. a per-operator profile of one window from oneDNN's verbose output, fp32
#      and (where the CPU runs it) bf16, with the implementation (ISA) of each kernel;
#   4. with OFFICIAL (the published code laid out as tools/bench_official.py says):
#      the official network and MONAI's sliding window (deploy/bench-official.sh);
#   5. the 512 x 512 x 300 CT through the whole pipeline, peak RSS (upp-bench-pipeline);
#   6. the server under load, batching on and off (upp-bench-load).
# Takes 30-60 minutes on a 2-core machine. Logs in OUT (default /tmp/upp-bench-cpu).
# Usage: deploy/bench-cpu.sh [OFFICIAL]
set -uo pipefail
cd "$(dirname "$0")/.."
OFFICIAL="${1:-}"
B="${UPP_BUILD_DIR:-build}"
OUT="${OUT:-/tmp/upp-bench-cpu}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
step() { echo "== $* ($(date -u '+%H:%M UTC'))"; }
{
  step "machine"
  lscpu | grep -E '^(Model name|CPU family|Model|CPU\(s\)):'
  echo "flags: $(grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_tile|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "commit $(git rev-parse --short HEAD)"
  step "one window: ours vs the PyTorch restatement"
  bash deploy/bench-model.sh 3 2
  for prec in fp32 bf16; do
    step "per-operator profile, $prec"
    if ONEDNN_VERBOSE=1 "$B/tools/upp-bench-model" --threads 2 --runs 2 --warmup 1 --precision "$prec" \
      >"$OUT/verbose_$prec.txt" 2>&1; then
      tail -1 "$OUT/verbose_$prec.txt"
      "$PY" tools/profile_model.py --onednn "$OUT/verbose_$prec.txt" --passes 3
    else
      echo "$prec: $(tail -1 "$OUT/verbose_$prec.txt")"
    fi
  done
  if [ -n "$OFFICIAL" ]; then
    step "the published code"
    bash deploy/bench-official.sh "$OFFICIAL" 3 2
  fi
  step "512 x 512 x 300 through the pipeline"
  /usr/bin/time -v "$B/tools/upp-bench-pipeline" --threads 2 2>&1 | grep -vE "^[0-9]+ / [0-9]+ windows|windows$" |
    grep -E '^\{|^ "|Maximum resident|Elapsed'
  step "the server under load"
  "$B/tools/upp-bench-load" --clients 4 --requests 3 --repeats 3 >"$OUT/load.json" 2>"$OUT/load.err"
  grep -E "batching|clients" "$OUT/load.err"
  step "done"
} 2>&1 | tee "$OUT/bench-cpu.log"
