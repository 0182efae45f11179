#!/usr/bin/env bash
# The Kubernetes manifests: every overlay renders and validates
# (deploy/k8s/validate.sh), and the validator refuses what it must: each
# case below breaks one rule in the rendered CPU overlay and expects the
# validator to fail naming it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
bash "$ROOT/deploy/k8s/validate.sh" "$OUT"

expect_refused() {  # SED_EXPRESSION TEXT_IN_THE_FINDING [OVERLAY (default cpu)]
  sed -e "$1" "$OUT/${3:-cpu}.yaml" >"$OUT/broken.yaml"
  if cmp -s "$OUT/${3:-cpu}.yaml" "$OUT/broken.yaml"; then
    echo "FAIL: '$1' changed nothing" >&2
    exit 1
  fi
  if node "$ROOT/deploy/k8s/validate/check.js" "$OUT/broken.yaml" 2>"$OUT/err"; then
    echo "FAIL: accepted with '$1'" >&2
    exit 1
  fi
  grep -q "$2" "$OUT/err" || { echo "FAIL: '$1' refused, but not for '$2':" >&2; cat "$OUT/err" >&2; exit 1; }
  echo "refused as expected: $2"
}
expect_refused 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' 'readOnlyRootFilesystem'
expect_refused 's/terminationGracePeriodSeconds: 60/terminationGracePeriodSeconds: 20/' 'not above drain_grace_seconds 30'
expect_refused 's/replicas: 2/replicas: two/' 'schema: .*replicas'
expect_refused 's/image: unetrpp-serve:0.1.0/image: unetrpp-serve:latest/' 'no version tag'
expect_refused 's/        - ALL/        - NET_RAW/' 'drop ALL'
expect_refused '/scaleTargetRef:/,/name:/ s/name: unetrpp-serve$/name: unetrpp-serve-x/' 'targets no Deployment'
expect_refused 's/- port: 8443/- port: 8444/' 'port dicomweb: no NetworkPolicy admits it'
# The front proxy's overlay: its haproxy.cfg is the shipped (and tested) one,
# and the server behind it is reachable through the proxy only.
cmp "$ROOT/deploy/proxy/haproxy.cfg" "$ROOT/deploy/k8s/overlays/proxied/haproxy.cfg" ||
  { echo "FAIL: deploy/k8s/overlays/proxied/haproxy.cfg differs from deploy/proxy/haproxy.cfg" >&2; exit 1; }
expect_refused 's/listen_address: "127.0.0.1:50052"/listen_address: "0.0.0.0:50052"/' 'beyond loopback' proxied
expect_refused 's/value: 127.0.0.1:50052/value: 127.0.0.1:50053/' 'the proxy sends to 127.0.0.1:50053' proxied
expect_refused 's/required: true/required: false/' 'does not require credentials' proxied
expect_refused 's/- containerPort: 9464/- containerPort: 50051\n          name: grpc\n        - containerPort: 9464/' 'declares port grpc' proxied
echo "manifests: passed"
