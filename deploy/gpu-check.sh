#!/usr/bin/env bash
# GPU check, run on a CUDA host with a pip PyTorch (the project's device
# machine): builds model/, its tools and tests against PyTorch's LibTorch, runs
# the parity tests on the GPU, and times a synapse window in float32 and
# bfloat16 against the PyTorch baseline on the same GPU. Writes logs to
# ${OUT:-gpu-out}. Needs .gpu/ (headers, googletest source, fixtures), which
# deploy/prepare-gpu-carry.sh fills on a Debian machine.
set -u
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
log() { echo "== $*"; }
{
  log "machine"; nvidia-smi -L; nvcc --version | tail -1; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
  TP=$(python3 -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  log "configure"
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DUPP_MODEL_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$TP" -DCMAKE_CUDA_ARCHITECTURES=90 -DTORCH_CUDA_ARCH_LIST=9.0 \
    -DUPP_FIXTURES_DIR="$PWD/.gpu/fixtures" || exit 1
  log "build"; time cmake --build build-gpu -j "$(nproc)" || exit 1
  log "tests on cuda"; UPP_TEST_DEVICE=cuda ./build-gpu/tests/model/model_tests 2>&1 | grep -vE "^\[ +(RUN|OK) \]"
  B=./build-gpu/tools/upp-bench-model
  for prec in fp32 bf16; do
    for batch in 1 4; do
      log "ours $prec batch $batch"; $B --device cuda --precision $prec --batch $batch --runs 20 --warmup 3 | tail -2
    done
  done
  for batch in 1 4; do
    log "reference pytorch fp32 batch $batch"
    python3 -c 'import torch; torch.backends.cudnn.allow_tf32=False; torch.backends.cuda.matmul.allow_tf32=False; import runpy, sys; sys.argv=["r","bench","--device","cuda","--runs","20","--warmup","3","--batch","'$batch'"]; runpy.run_path("tools/reference_unetrpp.py", run_name="__main__")'
    log "reference pytorch bf16 autocast batch $batch"
    python3 tools/reference_unetrpp.py bench --device cuda --runs 20 --warmup 3 --batch $batch --bf16
  done
  log "repeat ours fp32 batch 1 (same warm machine)"; $B --device cuda --runs 20 --warmup 3 | tail -2
} 2>&1 | tee "$OUT/gpu-check.log"
