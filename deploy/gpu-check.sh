#!/usr/bin/env bash
# The GPU check, one run of under 10 minutes on a CUDA host with a pip PyTorch
# and no Debian development packages (the project's device machine):
#   1. builds the whole server, its tests and benchmarks against PyTorch's
#      LibTorch and the Debian packages of deploy/gpu-bundle.sh's archive;
#   2. runs the model's parity tests on the GPU, the inference job's tests
#      (a job on the GPU gives the CPU's labels) and server_tests with the
#      model and its jobs on cuda:0 (batching, the per-instance CUDA streams,
#      stitching on the GPU, device memory admission and metrics);
#   3. times a synapse window in float32 and bfloat16 at batch 1/4/8, with
#      PyTorch running the same network (tools/reference_unetrpp.py) as the
#      baseline on the same GPU, and the service end to end (upp-bench-load)
#      with batching on and off;
#   4. packs the build for the CUDA image (deploy/docker/package-prebuilt.sh)
#      and runs the server from that package alone on cuda:0;
#   5. prints one summary.
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
  if cmake --build build-gpu -j "$(nproc)" --target unetrpp-serve upp-client server_tests model_tests inference_tests upp-bench-model \
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
  log "inference job tests (the job on cuda:0 against the CPU)"
  if ./build-gpu/tests/inference/inference_tests >"$OUT/inference_tests.log" 2>&1 &&
    grep -q "^\[       OK \] Job.OnTheGpuGivesTheCpusLabels" "$OUT/inference_tests.log"; then
    note "inference_tests (job on cuda:0 included): $(grep -E '^\[  PASSED' "$OUT/inference_tests.log")"
  else
    tail -30 "$OUT/inference_tests.log"
    note "FAIL or skipped: inference_tests (inference_tests.log)"
  fi
  log "server tests with the model and its jobs on cuda:0"
  if UPP_TEST_DEVICE=cuda:0 timeout 240 ./build-gpu/tests/server/server_tests --gtest_brief=1 >"$OUT/server_tests.log" 2>&1; then
    note "server_tests on cuda:0: $(grep -E '^\[  PASSED' "$OUT/server_tests.log")"
  else
    grep -vE "\[info\]" "$OUT/server_tests.log" | tail -30
    note "FAIL: server_tests on cuda:0 (server_tests.log)"
  fi
  note "tests done after $(elapsed) s"

  log "the CUDA image's package: the server run from it alone, model and jobs on cuda:0"
  TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  NV_LIBS=$(python3 -c 'import torch, os, glob; sp = os.path.dirname(os.path.dirname(torch.__file__)); print(" ".join(glob.glob(os.path.join(sp, "nvidia", "*", "lib"))))')
  # shellcheck disable=SC2086
  if bash deploy/docker/package-prebuilt.sh build-gpu /tmp/upp-cuda-package "$TORCH_LIB" $NV_LIBS >"$OUT/package.log" 2>&1; then
    printf 'listen_address: "127.0.0.1:50081"\nmetrics_address: "127.0.0.1:9481"\nmodels { name: "m" weights: "%s" devices: "cuda:0" job_device: "cuda:0" }\n' \
      /tmp/upp-cuda-package/share/unetrpp-serve/phantom_ct_v1.safetensors >/tmp/upp-cuda.textproto
    env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH=/tmp/upp-cuda-package/lib /tmp/upp-cuda-package/bin/unetrpp-serve \
      --config /tmp/upp-cuda.textproto >"$OUT/packaged-server.log" 2>&1 &
    PKG_SERVER=$!
    M=""
    for _ in $(seq 1 60); do
      M=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9481/metrics", timeout=2).read().decode())' 2>/dev/null) && break
      sleep 1
    done
    kill "$PKG_SERVER" 2>/dev/null
    wait "$PKG_SERVER" 2>/dev/null
    if echo "$M" | grep -q 'upp_model_load_duration_seconds{model="m"}' && echo "$M" | grep -q 'upp_device_memory_total_bytes{device="cuda:0"}'; then
      note "packaged server: loaded on cuda:0 from its own libraries ($(tail -1 "$OUT/package.log"))"
    else
      tail -20 "$OUT/packaged-server.log"
      note "FAIL: the packaged server did not load on cuda:0 (packaged-server.log)"
    fi
  else
    tail -20 "$OUT/package.log"
    note "FAIL: package-prebuilt.sh (package.log)"
  fi

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
  # The device tool allows 600 s per command: the load benchmark (about 2
  # minutes: jobs on the CPU and on the GPU, batching on and off) only
  # where that leaves room.
  if [ "$(elapsed)" -lt 420 ]; then
    ./build-gpu/tools/upp-random-weights -o /tmp/synapse_random.safetensors >/dev/null 2>&1
    timeout $((570 - $(elapsed))) ./build-gpu/tools/upp-bench-load --weights /tmp/synapse_random.safetensors \
      --device cuda:0 --job-devices cpu,cuda:0 --clients 4 --requests 2 --repeats 1 --inputs small,medium \
      --cpu-threads 8 --batch 8 >"$OUT/bench_load.json" 2>"$OUT/bench_load.err"
    grep -E "batching|clients" "$OUT/bench_load.err" | tee -a "$SUMMARY"
  else
    note "load benchmark skipped: $(elapsed) s used of the 600 (rerun it alone)"
  fi
  note "all done after $(elapsed) s"
} 2>&1 | tee "$LOG"
echo "== summary"
cat "$SUMMARY"
