#!/usr/bin/env bash
# The image, built and run as an operator would: read-only root, no
# capabilities, no privilege escalation, a memory limit. Checks that
#  - the container becomes healthy (its own HEALTHCHECK through the gRPC health service),
#  - it runs as uid 10001 and its admission limit follows the memory limit,
#  - a phantom NIfTI and a phantom DICOM series segmented through it give the
#    same labels as the same requests against the server built on the host,
#  - /metrics answers and counts those requests,
#  - SIGTERM (docker stop) during a request lets that request finish, and the
#    container exits 0.
# Needs the host build (deploy/build.sh); run by deploy/run-tests.sh.
# Usage: deploy/docker-test.sh        (root: starts dockerd and builds the image if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/docker/test-lib.sh
source deploy/docker/test-lib.sh
upp_test_init docker-test
HOST_PORT=50072

IMAGE="$(bash deploy/docker/build-image.sh | tail -1)"
echo "docker-test: image $IMAGE"

# 1. Run it hardened, on the default ports (its HEALTHCHECK probes 50051).
MEMORY_LIMIT=$((4 << 30))
"$DOCKER" run -d --name "$NAME" --network host --read-only --tmpfs /tmp:size=64m --cap-drop ALL \
  --security-opt no-new-privileges --memory "$MEMORY_LIMIT" --stop-timeout 60 "$IMAGE" >/dev/null
for _ in $(seq 1 120); do
  [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME")" = healthy ] && break
  [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$NAME")" = true ] || fail "the container stopped"
  sleep 2
done
[ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME")" = healthy ] || fail "not healthy within 240 s"
echo "docker-test: healthy (HEALTHCHECK through the gRPC health service)"
[ "$("$DOCKER" exec "$NAME" id -u)" = 10001 ] || fail "not running as uid 10001"
admitted_mib=$("$DOCKER" logs "$NAME" 2>&1 | sed -n 's/.*admission: at most \([0-9]*\) MiB.*/\1/p' | head -1)
[ -n "$admitted_mib" ] && [ "$admitted_mib" -le $((MEMORY_LIMIT >> 21)) ] ||
  fail "admission limit ${admitted_mib:-?} MiB is not within half the container's $((MEMORY_LIMIT >> 20)) MiB"
echo "docker-test: uid 10001, read-only root; admission ${admitted_mib} MiB under a $((MEMORY_LIMIT >> 20)) MiB limit"

# 2. The same requests against the server built here, same model.
upp_start_host_server "$HOST_PORT"
"$B/tools/upp-phantom" --seed 7 --max-inplane 96 --max-slices 48 -o "$WORK/ct.nii.gz" --dicom "$WORK/ct-dicom" >/dev/null
for where in container:50051 host:$HOST_PORT; do
  port=${where#*:}
  "$B/clients/upp-client" --server "127.0.0.1:$port" segment "$WORK/ct.nii.gz" -o "$WORK/${where%:*}-nifti.nii.gz" \
    >"$WORK/client.log" 2>&1 || { cat "$WORK/client.log" >&2; fail "NIfTI through the $where server"; }
  "$B/clients/upp-client" --server "127.0.0.1:$port" segment "$WORK/ct-dicom" -o "$WORK/${where%:*}-dicom.nii.gz" \
    --seg "$WORK/${where%:*}-seg.dcm" >"$WORK/client.log" 2>&1 || { cat "$WORK/client.log" >&2; fail "DICOM through the $where server"; }
done
/usr/bin/python3 - "$WORK" <<'PY' || fail "labels differ between the container and the host build"
import sys, nibabel, numpy
w = sys.argv[1]
for kind in ("nifti", "dicom"):
    a = numpy.asarray(nibabel.load(f"{w}/container-{kind}.nii.gz").dataobj)
    b = numpy.asarray(nibabel.load(f"{w}/host-{kind}.nii.gz").dataobj)
    assert a.shape == b.shape and (a == b).all(), kind
    assert len(numpy.unique(a)) > 2, f"{kind}: too few labels to compare"
    print(f"docker-test: {kind}: {a.shape} labels identical to the host build's ({len(numpy.unique(a))} values)")
PY

# 3. Metrics count the requests.
/usr/bin/python3 - <<'PY' || fail "/metrics does not count the requests"
import re, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=10).read().decode()
ok = sum(float(v) for v in re.findall(r'^upp_requests_total\{[^}]*code="OK"[^}]*\} (\S+)', text, re.M))
assert ok >= 2, ok
print(f"docker-test: /metrics: {ok:.0f} requests OK")
PY

# 4. SIGTERM during a request: it finishes, the container exits 0.
# Long enough (test-time mirroring: 8x the windows) that SIGTERM finds it in flight.
"$B/tools/upp-phantom" --seed 8 --max-inplane 256 --max-slices 128 -o "$WORK/big.nii.gz" >/dev/null
"$B/clients/upp-client" --server 127.0.0.1:50051 segment "$WORK/big.nii.gz" --mirror -o "$WORK/drained.nii.gz" \
  >"$WORK/drained.log" 2>&1 &
CLIENT=$!
for _ in $(seq 1 100); do
  /usr/bin/python3 -c '
import re, sys, urllib.request
t = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode()
sys.exit(0 if sum(float(v) for v in re.findall(r"^upp_requests_in_flight\S* (\S+)", t, re.M)) >= 1 else 1)' && break
  sleep 0.1
done
"$DOCKER" stop "$NAME" >/dev/null &
STOPPER=$!
wait "$CLIENT" || { cat "$WORK/drained.log" >&2; fail "the request in flight at SIGTERM did not complete"; }
wait "$STOPPER"
code="$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME")"
[ "$code" = 0 ] || fail "the container exited with $code after SIGTERM"
# The log to a file first: under pipefail, `docker logs | grep -q` fails when
# grep exits at its match before docker has written the rest (SIGPIPE).
"$DOCKER" logs "$NAME" >"$WORK/server.log" 2>&1
grep -q 'draining: 1 request' "$WORK/server.log" || fail "no request was in flight at SIGTERM"
echo "docker-test: SIGTERM during a request: it completed, the container exited 0"
echo "docker-test: passed"
