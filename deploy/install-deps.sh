#!/usr/bin/env bash
# Installs exactly the Debian 12 packages that unetrpp-serve's build, tests and
# demo need. Idempotent and non-interactive; run as root (or with sudo).
#   deploy/install-deps.sh           everything: build, tests, demo, image and manifest checks
#   deploy/install-deps.sh --build   only what building the binaries needs (the Dockerfile's build stage)
set -euo pipefail

BUILD_PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config
  # model/: LibTorch (CPU) with OpenBLAS, JSON, command-line parsing
  libtorch-dev libopenblas0-pthread libopenblas-dev libdnnl-dev nlohmann-json3-dev libcli11-dev
  # imageio/: Abseil (status, strings), zlib and libdeflate (.nii.gz), DCMTK, OpenJPEG
  libabsl-dev zlib1g-dev libdeflate-dev libdcmtk-dev libopenjp2-7-dev
  # proto/ + server/: gRPC and protobuf (with the C++ and Python plugins), Prometheus, logging,
  # OpenSSL (key hashes, JWK keys), libjwt (JWT signatures)
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev libspdlog-dev libssl-dev
  libjwt-dev
  # gateway/: DICOMweb (STOW-RS receiver: cpp-httplib with OpenSSL; STOW-RS sender: libcurl)
  libcpp-httplib-dev libcurl4-openssl-dev
  # clients/: the PNG overlay (cairo)
  libcairo2-dev
  # tracing/: OpenTelemetry C++ (OTLP exporter), from bookworm-backports (below)
  opentelemetry-cpp-dev
)
# Packages that come from bookworm-backports: deploy/apt-backports.sh adds the
# suite from this machine's own apt source and pins it to them alone.
BACKPORTED_PACKAGES=(opentelemetry-cpp-dev python3-opentelemetry-proto)

PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  git clang-format
  # tests (python3-nibabel: the independent NIfTI reader the tests compare with;
  # clang + libclang-rt: the libFuzzer targets of deploy/fuzz.sh)
  libgtest-dev libgmock-dev python3-nibabel clang libclang-rt-14-dev
  # tests compare DICOM reading with pydicom and use dcmtk's encoders and validators
  dcmtk python3-pydicom dicom3tools
  # checkpoint converter (tools/convert_checkpoint.py) and its test
  python3 python3-torch python3-numpy
  # clients/: the Python client (grpcio, protobuf; stubs from protoc + grpc_python_plugin)
  python3-grpcio python3-protobuf
  # tests: a self-signed certificate for the TLS test; an HTTP/2 client below gRPC (rapid reset);
  # the front proxy that bounds it (deploy/proxy: HAProxy 2.6, bookworm-security)
  openssl python3-h2 haproxy
  # deploy/docker: the image built and run (Docker engine, a local base image), manifests checked
  docker.io debootstrap yamllint nodejs
  # tests/gateway: a real PACS for the DICOM gateway's integration test (C-STORE and DICOMweb)
  orthanc orthanc-dicomweb
  # tests/monitoring: promtool checks the expositions and unit-tests deploy/monitoring's alerts
  prometheus
  # tests/tracing: the OTLP collector of the server's tracing test (bookworm-backports, pinned)
  python3-opentelemetry-proto
)
if [ "${1:-}" = "--build" ]; then PACKAGES=("${BUILD_PACKAGES[@]}"); fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# npm: Debian's package unless a Node.js that brings its own npm is installed.
# kubectl (its built-in kustomize renders deploy/k8s): Debian's kubernetes-client
# unless another kubectl is installed.
if [ "${1:-}" != "--build" ] && ! command -v npm >/dev/null; then missing+=(npm); fi
if [ "${1:-}" != "--build" ] && ! command -v kubectl >/dev/null; then missing+=(kubernetes-client); fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
for p in "${missing[@]}"; do
  if [[ " ${BACKPORTED_PACKAGES[*]} " == *" $p "* ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/apt-backports.sh"
    break
  fi
done
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
