#!/usr/bin/env bash
# Builds the unetrpp-serve image on this machine: starts a Docker engine if
# none answers, makes the base image locally if it cannot be pulled, then
# builds with BuildKit (the compiler cache persists between builds).
# Usage: deploy/docker/build-image.sh [TAG]   (default: the project version from CMakeLists.txt)
# Prints the image name on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Debian's docker CLI (20.10) builds with the engine's own BuildKit; a newer
# CLI without the buildx plugin refuses DOCKER_BUILDKIT=1.
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
export DOCKER
VERSION="$(sed -n 's/^project(unetrpp_serve VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)"
IMAGE="unetrpp-serve:${1:-$VERSION}"
BASE="${UPP_DOCKER_BASE:-debian:bookworm-slim}"

bash deploy/docker/start-dockerd.sh
bash deploy/docker/make-base-image.sh "$BASE"
start=$(date +%s)
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain --build-arg BASE="$BASE" \
  --build-arg UPP_JOBS="${UPP_JOBS:-2}" -t "$IMAGE" . >"${UPP_DOCKER_LOG:-/tmp/upp-docker-build.log}" 2>&1 || {
  tail -40 "${UPP_DOCKER_LOG:-/tmp/upp-docker-build.log}" >&2
  echo "image: build failed (log: ${UPP_DOCKER_LOG:-/tmp/upp-docker-build.log})" >&2
  exit 1
}
echo "image: built in $(($(date +%s) - start)) s, $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes" >&2
echo "$IMAGE"
