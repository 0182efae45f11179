#!/usr/bin/env bash
# The GPU check, one run of under 10 minutes on a CUDA host with a pip PyTorch
# and no Debian development packages (the project's device machine):
#   1. builds the whole server, its tests and benchmarks against PyTorch's
#      LibTorch and the Debian packages of deploy/gpu-bundle.sh's archive;
#   2. runs the model's parity tests on the GPU and server_tests with the
#      model on cuda:0 (batching, the per-instance CUDA streams, device
#      memory metrics);
#   3. times a synapse window in float32 and bfloat16 at batch 1/4/8, with
#      PyTorch running the same network (tools/reference_unetrpp.py) as the
#      baseline on the same GPU, and the service end to end (upp-bench-load)
#      with batching on and off;
#   4. prints one summary.
# Logs go to ${OUT:-gpu-out}. Needs, carried from a Debian machine:
#   .gpu/bundle.tar.xz   deploy/gpu-bundle.sh
#   .gpu/fixtures/       the synapse fixtures (the 64 MiB that travel hold no more):
#     mkdir -p .gpu/fixtures && cp ../shared/fixtures/unetrpp/{manifest.json,synapse_small_*.safetensors} .gpu/fixtures/
# Usage (device tool): bash deploy/gpu-check.sh   with carry [".gpu/bundle.tar.xz", ".gpu/fixtures"]
set -u
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
LOG="$OUT/gpu-check.log"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
log() { echo "== $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }

{
  log "machine"
  nvidia-smi -L
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
  if [ "$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')" != 1 ]; then
    note "FAIL: this LibTorch uses the pre-C++11 string ABI; Debian's libraries use the C++11 one"
    exit 1
  fi
  TP=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')

  log "bundle"
  rm -rf /tmp/upp-bundle && mkdir -p /tmp/upp-bundle && tar -C /tmp/upp-bundle -xJf .gpu/bundle.tar.xz || exit 1
  # shellcheck disable=SC1091
  source /tmp/upp-bundle/bundle/env.sh

  log "configure"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP" \
    -DUPP_DEPS_PREFIX="$UPP_DEPS_PREFIX" -DUPP_WITH_CAIRO=OFF -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DTORCH_CUDA_ARCH_LIST=9.0 -DUPP_FIXTURES_DIR="$PWD/.gpu/fixtures" >"$OUT/configure.log" 2>&1 || {
    tail -40 "$OUT/configure.log"
    note "FAIL: configure (configure.log)"
    exit 1
  }
  log "build"
  if cmake --build build-gpu -j "$(nproc)" --target unetrpp-serve server_tests model_tests upp-bench-model \
    upp-bench-load upp-random-weights >"$OUT/build.log" 2>&1; then
    note "build: ok after $(elapsed) s"
  else
    grep -m5 -A12 "error" "$OUT/build.log"
    note "FAIL: build (build.log)"
    exit 1
  fi

  log "model parity tests on cuda (synapse: the fixtures that travel)"
  if UPP_TEST_DEVICE=cuda ./build-gpu/tests/model/model_tests --gtest_brief=1 --gtest_filter='Fixtures/ParityTest.*/0' \
    >"$OUT/model_tests.log" 2>&1; then
    note "model_tests on cuda: $(grep -E '^\[  PASSED' "$OUT/model_tests.log")"
  else
    tail -30 "$OUT/model_tests.log"
    note "FAIL: model_tests on cuda: $(grep -cE '^\[  FAILED  \] [A-Z]' "$OUT/model_tests.log") failed"
  fi
  log "server tests with the model on cuda:0"
  if UPP_TEST_DEVICE=cuda:0 timeout 240 ./build-gpu/tests/server/server_tests --gtest_brief=1 >"$OUT/server_tests.log" 2>&1; then
    note "server_tests on cuda:0: $(grep -E '^\[  PASSED' "$OUT/server_tests.log")"
  else
    grep -vE "\[info\]" "$OUT/server_tests.log" | tail -30
    note "FAIL: server_tests on cuda:0 (server_tests.log)"
  fi
  note "tests done after $(elapsed) s"

  log "model benchmark: ours vs PyTorch (synapse window, random weights)"
  B=./build-gpu/tools/upp-bench-model
  for prec in fp32 bf16; do
    for batch in 1 4 8; do
      r=$($B --device cuda --precision $prec --batch $batch --runs 20 --warmup 3 2>&1 | tail -1)
      note "ours $prec batch $batch: $r"
    done
  done
  for batch in 1 4 8; do
    r=$(python3 -c 'import torch; torch.backends.cudnn.allow_tf32=False; torch.backends.cuda.matmul.allow_tf32=False; import runpy, sys; sys.argv=["r","bench","--device","cuda","--runs","20","--warmup","3","--batch","'$batch'"]; runpy.run_path("tools/reference_unetrpp.py", run_name="__main__")' 2>&1 | tail -1)
    note "pytorch fp32 batch $batch: $r"
    r=$(python3 tools/reference_unetrpp.py bench --device cuda --runs 20 --warmup 3 --batch $batch --bf16 2>&1 | tail -1)
    note "pytorch bf16 autocast batch $batch: $r"
  done
  note "model benchmark done after $(elapsed) s"

  log "service under load, model on cuda:0 (full synapse preset, random weights)"
  ./build-gpu/tools/upp-random-weights -o /tmp/synapse_random.safetensors >/dev/null 2>&1
  ./build-gpu/tools/upp-bench-load --weights /tmp/synapse_random.safetensors --device cuda:0 --clients 4 \
    --requests 2 --repeats 2 --inputs small,medium --cpu-threads 8 --batch 8 \
    >"$OUT/bench_load.json" 2>"$OUT/bench_load.err"
  grep -E "batching|clients" "$OUT/bench_load.err" | tee -a "$SUMMARY"
  note "all done after $(elapsed) s"
} 2>&1 | tee "$LOG"
echo "== summary"
cat "$SUMMARY"
