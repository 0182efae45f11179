#!/usr/bin/env bash
# Installs exactly the Debian 12 packages that unetrpp-serve's build, tests and
# demo need. Idempotent and non-interactive; run as root (or with sudo).
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git clang-format
  # model/: LibTorch (CPU) with OpenBLAS, JSON, command-line parsing
  libtorch-dev libopenblas0-pthread libopenblas-dev libdnnl-dev nlohmann-json3-dev libcli11-dev
  # preprocessing/: Abseil (status, strings), zlib and libdeflate (.nii.gz)
  libabsl-dev zlib1g-dev libdeflate-dev
  # tests (python3-nibabel: the independent NIfTI reader the tests compare with;
  # clang + libclang-rt: the libFuzzer targets of deploy/fuzz.sh)
  libgtest-dev libgmock-dev python3-nibabel clang libclang-rt-14-dev
  # preprocessing/: DICOM through DCMTK; tests compare with pydicom and use dcmtk's encoders
  libdcmtk-dev dcmtk python3-pydicom dicom3tools
  # preprocessing/: JPEG 2000 DICOM through OpenJPEG (DCMTK's free edition has no JPEG 2000 codec)
  libopenjp2-7-dev
  # checkpoint converter (tools/convert_checkpoint.py) and its test
  python3 python3-torch python3-numpy
  # proto/ + server/: gRPC and protobuf (with the C++ plugin), Prometheus, logging
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev libspdlog-dev
  # clients/: the Python client (grpcio, protobuf; stubs from protoc + grpc_python_plugin), the PNG overlay (cairo)
  python3-grpcio python3-protobuf libcairo2-dev
  # tests: a self-signed certificate for the TLS test
  openssl
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
