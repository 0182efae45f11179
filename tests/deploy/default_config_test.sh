#!/usr/bin/env bash
# The shipped configuration (deploy/server.textproto) serves TLS: with the
# development certificates it starts, answers health over TLS, and refuses
# a plaintext client.
# Usage: default_config_test.sh BUILD_DIR
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
B="$(cd "$1" && pwd)"
cd "$ROOT"
CERTS="$(mktemp -d)"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$CERTS"' EXIT
bash deploy/make-dev-certs.sh "$CERTS" >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The certificates in a folder of their own: the file's relative names are
# taken from its folder, so the copy names the model by its full path.
sed -e "s|\"tls/|\"$CERTS/|g" -e "s|\"\.\./model/|\"$ROOT/model/|g" deploy/server.textproto >"$CERTS/server.textproto"
"$B/server/unetrpp-serve" --config "$CERTS/server.textproto" --listen "127.0.0.1:$PORT" --metrics off \
  >"$CERTS/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  "$B/clients/upp-client" --server "127.0.0.1:$PORT" --tls-ca "$CERTS/ca.pem" health >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { cat "$CERTS/server.log"; exit 1; }
  sleep 0.2
done
"$B/clients/upp-client" --server "127.0.0.1:$PORT" --tls-ca "$CERTS/ca.pem" health
if "$B/clients/upp-client" --server "127.0.0.1:$PORT" health >/dev/null 2>&1; then
  echo "FAIL: a plaintext client was answered" >&2
  exit 1
fi
echo "default configuration: TLS on, plaintext refused"
