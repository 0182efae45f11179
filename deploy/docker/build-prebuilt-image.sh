#!/usr/bin/env bash
# Builds the image of a prebuilt server package (deploy/docker/package-prebuilt.sh)
# with deploy/docker/Dockerfile.prebuilt: the CUDA image of the Kubernetes GPU
# overlay is this, from the GPU build. Starts a Docker engine and makes the
# base image if needed, as build-image.sh does.
# Usage: deploy/docker/build-prebuilt-image.sh PACKAGE_DIR IMAGE   (e.g. unetrpp-serve-cuda:0.1.0)
# Prints the image name on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
PACKAGE="${1:?usage: build-prebuilt-image.sh PACKAGE_DIR IMAGE}"
IMAGE="${2:?usage: build-prebuilt-image.sh PACKAGE_DIR IMAGE}"
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER
BASE="${UPP_DOCKER_BASE:-debian:bookworm-slim}"
bash deploy/docker/start-dockerd.sh
bash deploy/docker/make-base-image.sh "$BASE" >&2
"$DOCKER" build --network host -q --build-arg BASE="$BASE" -f deploy/docker/Dockerfile.prebuilt -t "$IMAGE" \
  "$PACKAGE" >&2
echo "image: $IMAGE, $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes" >&2
echo "$IMAGE"
