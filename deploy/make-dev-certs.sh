#!/usr/bin/env bash
# Certificates for development and tests, made with openssl: a private CA,
# a server certificate for localhost / 127.0.0.1 signed by it, and a client
# certificate (CN "dev-client") for mTLS. deploy/server.textproto serves TLS
# with these. In production use your organisation's CA (or cert-manager in
# Kubernetes: docs/deploy.md).
# Usage: deploy/make-dev-certs.sh [DIR]   (default deploy/tls; existing files are kept)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-deploy/tls}"
mkdir -p "$DIR"
cd "$DIR"
if [ -f ca.pem ] && [ -f server.pem ] && [ -f client.pem ]; then
  echo "dev-certs: $DIR already has ca.pem, server.pem, client.pem"
  exit 0
fi
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=unetrpp-serve dev CA" -days 365 \
  -keyout ca.key -out ca.pem 2>/dev/null
sign() {  # NAME CN SAN
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" >"$1.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
sign server localhost "DNS:localhost,IP:127.0.0.1" serverAuth
sign client dev-client "DNS:dev-client" clientAuth
chmod 644 ca.pem server.pem client.pem
echo "dev-certs: $DIR/{ca,server,client}.pem and keys (CA valid 365 days)"
