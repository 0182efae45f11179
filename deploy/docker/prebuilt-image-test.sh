#!/usr/bin/env bash
# The prebuilt-package image path (package-prebuilt.sh, Dockerfile.prebuilt,
# build-prebuilt-image.sh), proved with the CPU build of this machine: the
# package holds every library the server needs on a bare Debian 12, and the
# image serves, hardened, the same labels as the host build. The CUDA image
# is made the same way from the GPU build (deploy/gpu-check.sh packs and
# runs that package on the device).
# Needs the host build (deploy/build.sh) and root for docker.
# Usage: deploy/docker/prebuilt-image-test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/docker/test-lib.sh
source deploy/docker/test-lib.sh
upp_test_init prebuilt-image-test
PORT=50073
HOST_PORT=50074

bash deploy/docker/package-prebuilt.sh "$B" "$WORK/package"
IMAGE="$(bash deploy/docker/build-prebuilt-image.sh "$WORK/package" unetrpp-serve-prebuilt:test | tail -1)"
"$DOCKER" run -d --name "$NAME" --network host --read-only --tmpfs /tmp:size=64m --cap-drop ALL \
  --security-opt no-new-privileges --memory 4g "$IMAGE" --listen "127.0.0.1:$PORT" --metrics off \
  --weights /opt/unetrpp/share/unetrpp-serve/phantom_ct_v1.safetensors >/dev/null
for _ in $(seq 1 120); do
  "$B/clients/upp-client" --server "127.0.0.1:$PORT" health >/dev/null 2>&1 && break
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container stopped"
  sleep 1
done
"$B/clients/upp-client" --server "127.0.0.1:$PORT" health >/dev/null 2>&1 || fail "not serving within 120 s"
[ "$("$DOCKER" exec "$NAME" id -u)" = 10001 ] || fail "not running as uid 10001"
"$B/tools/upp-phantom" --seed 7 --max-inplane 96 --max-slices 48 -o "$WORK/ct.nii.gz" >/dev/null
"$B/clients/upp-client" --server "127.0.0.1:$PORT" segment "$WORK/ct.nii.gz" -o "$WORK/image.nii.gz" \
  >"$WORK/client.log" 2>&1 || { cat "$WORK/client.log" >&2; fail "segmenting through the image"; }
# The same request against the server built here, same model.
upp_start_host_server "$HOST_PORT"
"$B/clients/upp-client" --server "127.0.0.1:$HOST_PORT" segment "$WORK/ct.nii.gz" -o "$WORK/host.nii.gz" \
  >"$WORK/client.log" 2>&1 || { cat "$WORK/client.log" >&2; fail "segmenting through the host build"; }
/usr/bin/python3 - "$WORK" <<'PY' || fail "labels differ between the image and the host build"
import sys, nibabel, numpy
w = sys.argv[1]
a = numpy.asarray(nibabel.load(f"{w}/image.nii.gz").dataobj)
b = numpy.asarray(nibabel.load(f"{w}/host.nii.gz").dataobj)
assert a.shape == b.shape and (a == b).all()
assert len(numpy.unique(a)) > 2, "too few labels to compare"
print(f"prebuilt-image-test: {a.shape} labels identical to the host build's ({len(numpy.unique(a))} values)")
PY
echo "prebuilt-image-test: passed ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes)"
