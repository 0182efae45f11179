#!/usr/bin/env bash
# The GPU check, one run of under 10 minutes on a CUDA host with a pip PyTorch
# and no Debian development packages (the project's device machine):
#   1. builds the whole server, its tests and benchmarks against PyTorch's
#      LibTorch and the Debian packages of deploy/gpu-bundle.sh's archive
#      (ninja -k 0: what builds is checked even if one target does not),
#      with OpenTelemetry tracing where the bundle carries the SDK;
#   2. runs the model's parity tests on the GPU, the inference job's tests
#      (a job on the GPU gives the CPU's labels) and server_tests with the
#      model and its jobs on cuda:0 (batching, the per-instance CUDA streams,
#      stitching on the GPU, device memory admission and metrics);
#   3. times a synapse window in float32 and bfloat16 at batch 1/4/8 and the
#      service end to end (upp-bench-load) with batching on and off;
#   4. where time is left (each later step is skipped with a note otherwise):
#      PyTorch running the same network (tools/reference_unetrpp.py) as the
#      baseline on the same GPU, then the CUDA image's package
#      (deploy/docker/package-prebuilt.sh) with the server run from it alone;
#   5. prints one summary.
# Every step has its own time limit, so that one hang cannot take the run.
# Files under ${OUT:-gpu-out} (the device tool brings back at most 8):
# summary.txt, gpu-check.log (everything printed), logs.tar.gz (each step's
# own log) and bench_load.json. Needs, carried from a Debian machine:
#   .gpu/bundle.tar.xz   deploy/gpu-bundle.sh
#   .gpu/fixtures/       the synapse fixtures (the 64 MiB that travel hold no more):
#     mkdir -p .gpu/fixtures && cp ../shared/fixtures/unetrpp/{manifest.json,synapse_small_*.safetensors} .gpu/fixtures/
# Usage (device tool): bash deploy/gpu-check.sh   with carry [".gpu/bundle.tar.xz", ".gpu/fixtures"]
set -u
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
LOGS=/tmp/upp-gpu-logs # the steps' logs, packed into $OUT/logs.tar.gz at the end
rm -rf "$LOGS" && mkdir -p "$LOGS"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
log() { echo "== $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
START=$(date +%s)
# GPU_CHECK_EXTRA_S: seconds added to every step's deadline, for trying the
# script on a slower machine (a CPU-only one builds for half an hour).
elapsed() { echo $(($(date +%s) - START - ${GPU_CHECK_EXTRA_S:-0})); }
# Seconds left before $1 (of the run's time), for `timeout`; at least 1.
until_s() { local left=$(($1 - $(elapsed))); echo $((left > 1 ? left : 1)); }
# True (and a note) when fewer than $2 seconds are left before $1.
short_of() {
  if [ $(($1 - $(elapsed))) -lt "$2" ]; then
    note "$3 skipped: $(elapsed) s used (rerun it alone)"
    return 0
  fi
  return 1
}
BIN=./build-gpu
LOADED='upp_model_load_duration_seconds{model="m"}'
# Runs the server from the package alone, model and jobs on cuda:0, with the
# package's libraries, then the host's (the driver's, as a container runtime
# would mount them), not the bundle's; polls its metrics until the model has
# loaded (the endpoint answers before), the server has died, or the time is
# up, and prints the last metrics read.
packaged_server_metrics() {
  local m="" pid
  printf 'listen_address: "127.0.0.1:50081"\nmetrics_address: "127.0.0.1:9481"\nmodels { name: "m" weights: "%s" devices: "cuda:0" job_device: "cuda:0" }\n' \
    /tmp/upp-cuda-package/share/unetrpp-serve/phantom_ct_v1.safetensors >/tmp/upp-cuda.textproto
  env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="/tmp/upp-cuda-package/lib${HOST_LD_LIBRARY_PATH:+:$HOST_LD_LIBRARY_PATH}" \
    /tmp/upp-cuda-package/bin/unetrpp-serve --config /tmp/upp-cuda.textproto >"$LOGS/packaged-server.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null && [ "$(elapsed)" -lt 585 ]; do
    m=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9481/metrics", timeout=2).read().decode())' 2>/dev/null)
    echo "$m" | grep -qF "$LOADED" && break
    sleep 1
  done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "$m"
}

{
  log "machine"
  nvidia-smi -L
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)' || {
    note "FAIL: $(command -v python3) has no torch"
    exit 1
  }
  if [ "$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')" != 1 ]; then
    note "FAIL: this LibTorch uses the pre-C++11 string ABI; Debian's libraries use the C++11 one"
    exit 1
  fi
  TP=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  # The host's own library path (the driver's folder, for instance), kept for
  # the packaged server below, which env.sh's bundle folders must not reach.
  HOST_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

  log "bundle"
  rm -rf /tmp/upp-bundle && mkdir -p /tmp/upp-bundle && tar -C /tmp/upp-bundle -xJf .gpu/bundle.tar.xz || exit 1
  # shellcheck disable=SC1091
  source /tmp/upp-bundle/bundle/env.sh

  log "configure"
  GEN=(-G Ninja)
  command -v ninja >/dev/null || GEN=()
  # Tracing (OpenTelemetry, from bookworm-backports): required where the
  # bundle carries the SDK (deploy/gpu-bundle.sh adds it), so that a broken
  # package fails here rather than building the no-op tracer unnoticed.
  OTEL=OFF
  [ -d "$UPP_DEPS_PREFIX/lib/x86_64-linux-gnu/cmake/opentelemetry-cpp" ] && OTEL=ON
  note "tracing: UPP_WITH_OTEL=$OTEL$([ "$OTEL" = OFF ] && echo ' (a bundle without OpenTelemetry: remake it with deploy/gpu-bundle.sh)')"
  timeout 120 cmake -S . -B build-gpu "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP" \
    -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu -DUPP_DEPS_PREFIX="$UPP_DEPS_PREFIX" -DUPP_WITH_CAIRO=OFF \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 -DUPP_FIXTURES_DIR="$PWD/.gpu/fixtures" \
    -DUPP_WITH_OTEL="$OTEL" >"$LOGS/configure.log" 2>&1 || {
    tail -40 "$LOGS/configure.log"
    note "FAIL: configure (configure.log)"
    exit 1
  }
  log "build"
  KEEP_GOING=(-- -k 0)
  [ ${#GEN[@]} -eq 0 ] && KEEP_GOING=(-- -k)
  if timeout "$(until_s 330)" cmake --build build-gpu -j "$(nproc)" --target unetrpp-serve upp-client server_tests \
    model_tests inference_tests upp-bench-model upp-bench-load upp-random-weights "${KEEP_GOING[@]}" \
    >"$LOGS/build.log" 2>&1; then
    note "build: ok after $(elapsed) s"
  else
    grep -m5 -A12 "error" "$LOGS/build.log"
    note "FAIL: build after $(elapsed) s (build.log); the steps below run what was built"
  fi
  built() { [ -x "$BIN/$1" ] || { note "FAIL: $1 was not built"; return 1; }; }

  log "model parity tests on cuda (synapse: the fixtures that travel)"
  if built tests/model/model_tests; then
    if UPP_TEST_DEVICE=cuda timeout 120 $BIN/tests/model/model_tests --gtest_brief=1 \
      --gtest_filter='Fixtures/ParityTest.*/0' >"$LOGS/model_tests.log" 2>&1; then
      note "model_tests on cuda: $(grep -E '^\[  PASSED' "$LOGS/model_tests.log")"
    else
      tail -30 "$LOGS/model_tests.log"
      note "FAIL: model_tests on cuda: $(grep -cE '^\[  FAILED  \] [A-Z]' "$LOGS/model_tests.log") failed"
    fi
  fi
  log "inference job tests (the job on cuda:0 against the CPU)"
  if built tests/inference/inference_tests; then
    if timeout 120 $BIN/tests/inference/inference_tests >"$LOGS/inference_tests.log" 2>&1 &&
      grep -q "^\[       OK \] Job.OnTheGpuGivesTheCpusLabels" "$LOGS/inference_tests.log"; then
      note "inference_tests (job on cuda:0 included): $(grep -E '^\[  PASSED' "$LOGS/inference_tests.log")"
    else
      tail -30 "$LOGS/inference_tests.log"
      note "FAIL or skipped: inference_tests (inference_tests.log)"
    fi
  fi
  log "server tests with the model and its jobs on cuda:0"
  # MultiChannelTest needs the tumor fixtures, which do not travel (size).
  if built tests/server/server_tests; then
    if UPP_TEST_DEVICE=cuda:0 timeout 180 $BIN/tests/server/server_tests --gtest_brief=1 \
      --gtest_filter='-MultiChannelTest.*' >"$LOGS/server_tests.log" 2>&1; then
      note "server_tests on cuda:0: $(grep -E '^\[  PASSED' "$LOGS/server_tests.log")"
    else
      grep -vE "\[info\]" "$LOGS/server_tests.log" | tail -30
      note "FAIL: server_tests on cuda:0 (server_tests.log)"
    fi
  fi
  note "tests done after $(elapsed) s"

  log "model benchmark: ours (synapse window, random weights)"
  if built tools/upp-bench-model; then
    for prec in fp32 bf16; do
      for batch in 1 4 8; do
        r=$(timeout 60 $BIN/tools/upp-bench-model --device cuda --precision $prec --batch $batch --runs 20 \
          --warmup 3 2>&1 | grep -m1 -E '^median_ms|^[A-Z_]+: ' | cut -c1-200)
        note "ours $prec batch $batch: $r"
      done
    done
  fi
  note "model benchmark done after $(elapsed) s"

  log "service under load, model on cuda:0 (full synapse preset, random weights)"
  # About 2 minutes: jobs on the CPU and on the GPU, batching on and off.
  if ! short_of 560 150 "load benchmark" && built tools/upp-bench-load && built tools/upp-random-weights; then
    timeout 60 $BIN/tools/upp-random-weights -o /tmp/synapse_random.safetensors >/dev/null 2>&1
    if timeout "$(until_s 560)" $BIN/tools/upp-bench-load --weights /tmp/synapse_random.safetensors \
      --device cuda:0 --job-devices cpu,cuda:0 --clients 4 --requests 2 --repeats 1 --inputs small,medium \
      --cpu-threads 8 --batch 8 >"$OUT/bench_load.json" 2>"$LOGS/bench_load.err"; then
      grep -E "batching|clients" "$LOGS/bench_load.err" | tee -a "$SUMMARY"
    else
      tail -20 "$LOGS/bench_load.err"
      note "FAIL: upp-bench-load after $(elapsed) s (bench_load.err)"
    fi
  fi

  log "baseline: PyTorch running the same network on the same GPU"
  for batch in 1 4 8; do
    short_of 575 25 "pytorch baseline batch $batch" && break
    r=$(timeout 40 python3 -c 'import torch; torch.backends.cudnn.allow_tf32=False; torch.backends.cuda.matmul.allow_tf32=False; import runpy, sys; sys.argv=["r","bench","--device","cuda","--runs","20","--warmup","3","--batch","'$batch'"]; runpy.run_path("tools/reference_unetrpp.py", run_name="__main__")' 2>&1 | tail -1)
    note "pytorch fp32 batch $batch: $r"
    r=$(timeout 40 python3 tools/reference_unetrpp.py bench --device cuda --runs 20 --warmup 3 --batch $batch \
      --bf16 2>&1 | tail -1)
    note "pytorch bf16 autocast batch $batch: $r"
  done

  log "the CUDA image's package: the server run from it alone, model and jobs on cuda:0"
  if ! short_of 580 90 "packaged server" && built server/unetrpp-serve; then
    TORCH_LIB=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    NV_LIBS=$(python3 -c 'import torch, os, glob; sp = os.path.dirname(os.path.dirname(torch.__file__)); print(" ".join(glob.glob(os.path.join(sp, "nvidia", "*", "lib"))))')
    # shellcheck disable=SC2086
    if timeout "$(until_s 560)" bash deploy/docker/package-prebuilt.sh build-gpu /tmp/upp-cuda-package "$TORCH_LIB" \
      $NV_LIBS >"$LOGS/package.log" 2>&1; then
      M=$(packaged_server_metrics)
      if echo "$M" | grep -qF "$LOADED" &&
        echo "$M" | grep -q 'upp_device_memory_total_bytes{device="cuda:0"}'; then
        note "packaged server: loaded on cuda:0 from its own libraries ($(tail -1 "$LOGS/package.log"))"
      else
        tail -20 "$LOGS/packaged-server.log"
        note "FAIL: the packaged server did not load on cuda:0 (packaged-server.log)"
      fi
    else
      tail -20 "$LOGS/package.log"
      note "FAIL: package-prebuilt.sh (package.log)"
    fi
  fi
  note "all done after $(elapsed) s"
} 2>&1 | tee "$OUT/gpu-check.log"
tar -C "$LOGS" -czf "$OUT/logs.tar.gz" .
echo "== summary"
cat "$SUMMARY"
