#!/usr/bin/env bash
# Proves that deploy/gpu-bundle.sh's archive is all a GPU host needs beyond
# its compiler, CMake and LibTorch: in a Debian 12 container holding only
# build-essential, CMake, Ninja and a LibTorch (Debian's, standing in for
# PyTorch's: its packaged protobuf headers removed, so protobuf too must come
# from the bundle, and its CMake package made to define protobuf's target as
# an empty one, as PyTorch's wheels do), it checks that none of the server's
# other dependencies is installed, unpacks the archive, builds the server and
# the test binaries the GPU check runs against it alone, and runs them on the
# CPU.
#
# Usage: deploy/gpu-bundle-test.sh   (root; starts dockerd where needed; needs
# .gpu/bundle.tar.xz from deploy/gpu-bundle.sh and the fixtures in ../shared)
# A ccache directory under /var/cache keeps reruns short.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER
IMAGE=upp-gpu-bundle-test:1
FIXTURES="$(cd ../shared/fixtures/unetrpp && pwd)"
[ -f .gpu/bundle.tar.xz ] || { echo "gpu-bundle-test: run deploy/gpu-bundle.sh first" >&2; exit 1; }
bash deploy/docker/start-dockerd.sh >/dev/null
bash deploy/docker/make-base-image.sh debian:bookworm-slim >/dev/null

if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  "$DOCKER" build --network host -t "$IMAGE" - <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build ccache xz-utils libtorch-dev libopenblas0-pthread \
 && dpkg --purge --force-depends libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
DOCKERFILE
fi

mkdir -p /var/cache/upp-gpu-bundle-ccache
"$DOCKER" run --rm --network host -v "$PWD":/src:ro -v "$FIXTURES":/fixtures:ro \
  -v /var/cache/upp-gpu-bundle-ccache:/ccache -e CCACHE_DIR=/ccache -e CCACHE_BASEDIR=/work "$IMAGE" bash -euo pipefail -c '
  # 1. Nothing but LibTorch and the toolchain: the server dependencies are absent.
  for h in grpcpp/grpcpp.h google/protobuf/message.h absl/status/status.h dcmtk/config/osconfig.h \
           spdlog/spdlog.h prometheus/registry.h openjpeg-2.5/openjpeg.h libdeflate.h jwt.h openssl/ssl.h \
           nlohmann/json.hpp CLI/CLI.hpp gtest/gtest.h; do
    if [ -e /usr/include/$h ]; then echo "gpu-bundle-test: /usr/include/$h is installed" >&2; exit 1; fi
  done
  for tool in protoc grpc_cpp_plugin pkg-config pkgconf; do
    if command -v $tool >/dev/null; then echo "gpu-bundle-test: $tool is installed" >&2; exit 1; fi
  done
  echo "gpu-bundle-test: no server dependency installed besides LibTorch"
  # As a pip LibTorch (which links its own protobuf) configures itself:
  # protobuf::libprotobuf made an empty target when no protobuf was found
  # before it (the server must still link the libprotobuf of the bundle).
  c2=/usr/lib/x86_64-linux-gnu/cmake/Caffe2/Caffe2Config.cmake
  sed -i "/^# Protobuf$/{n;s/^if(OFF)$/if(ON)/}" $c2
  grep -A1 "^# Protobuf$" $c2 | grep -qx "if(ON)" || { echo "gpu-bundle-test: $c2 not as expected" >&2; exit 1; }
  # 2. The archive, unpacked as on the GPU host.
  mkdir -p /work && tar -C /work -xJf /src/.gpu/bundle.tar.xz
  source /work/bundle/env.sh
  # 3. The build against it.
  cmake -S /src -B /work/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DUPP_DEPS_PREFIX="$UPP_DEPS_PREFIX" \
    -DUPP_WITH_CAIRO=OFF -DUPP_FIXTURES_DIR=/fixtures > /work/configure.log || { tail -30 /work/configure.log; exit 1; }
  grep -E "dependencies from|Found (Protobuf|PkgConfig)" /work/configure.log || true
  cmake --build /work/build -j 2 --target unetrpp-serve upp-client server_tests model_tests inference_tests upp-bench-model upp-bench-load \
    > /work/build.log || { grep -B5 -A20 -m3 "error" /work/build.log; exit 1; }
  # 4. What was linked comes from the bundle.
  ldd /work/build/server/unetrpp-serve | grep -E "grpc|protobuf|dcmdata|absl_status\.|spdlog|prometheus" | head -6
  if ldd /work/build/server/unetrpp-serve | grep -E "not found"; then exit 1; fi
  # 5. The tests the GPU check runs, here on the CPU.
  cd /work/build
  ./tests/server/server_tests --gtest_brief=1 2>&1 | grep -vE "^\[[0-9-]+ [0-9:.]+\] \[info\]" | tail -8
  ./tests/model/model_tests --gtest_brief=1 2>&1 | tail -4
  ./tests/inference/inference_tests --gtest_brief=1 2>&1 | tail -4
  # 6. The CUDA image package (package-prebuilt.sh) of this build runs from its own libraries.
  bash /src/deploy/docker/package-prebuilt.sh /work/build /work/package | tail -1
  env -i /usr/bin/env LD_LIBRARY_PATH=/work/package/lib /work/package/bin/unetrpp-serve --help | head -1
  env -i /usr/bin/env LD_LIBRARY_PATH=/work/package/lib /work/package/bin/upp-client --help | head -1
  echo "gpu-bundle-test: PASSED"
'
