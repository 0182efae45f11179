# What the image tests share (sourced by deploy/docker-test.sh and
# deploy/docker/prebuilt-image-test.sh, from the repository root):
#   upp_test_init LABEL    B, DOCKER, WORK (removed at exit), NAME (the
#                          container, removed at exit), fail MESSAGE
#   upp_start_host_server PORT
#                          the server built here with the default model, as
#                          the reference the image's labels are compared with
#                          (stopped at exit)
upp_test_init() {
  UPP_TEST_LABEL="$1"
  B="${UPP_BUILD_DIR:-build}"
  DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
  export DOCKER
  WORK="$(mktemp -d "/tmp/upp-$UPP_TEST_LABEL.XXXXXX")"
  NAME="upp-$UPP_TEST_LABEL-$$"
  HOST_SERVER=""
  trap upp_test_cleanup EXIT
}

upp_test_cleanup() {
  "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
  if [ -n "$HOST_SERVER" ]; then kill "$HOST_SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK"
}

fail() {
  echo "$UPP_TEST_LABEL: FAILED: $*" >&2
  "$DOCKER" logs "$NAME" 2>&1 | tail -20 >&2 || true
  exit 1
}

upp_start_host_server() {
  "$B/server/unetrpp-serve" --listen "127.0.0.1:$1" --metrics off \
    --weights model/weights/phantom_ct_v1.safetensors >"$WORK/host-server.log" 2>&1 &
  HOST_SERVER=$!
  for _ in $(seq 1 300); do
    "$B/clients/upp-client" --server "127.0.0.1:$1" health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "the host server did not start (host-server.log)"
}
