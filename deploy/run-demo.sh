#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is missing, build,
# start unetrpp-serve with its default model, generate a synthetic abdominal
# CT (NIfTI and a DICOM series), segment it through gRPC with upp-client,
# write the label map, a DICOM SEG, an overview PNG and per-organ volumes,
# score it against the phantom's truth (Dice), and stop the server.
# Output in ./demo-output (UPP_DEMO_DIR). UPP_DEMO_SEED picks another phantom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
bash deploy/build.sh
B="${UPP_BUILD_DIR:-build}"
OUT="${UPP_DEMO_DIR:-demo-output}"
PORT="${UPP_DEMO_PORT:-50051}"
SEED="${UPP_DEMO_SEED:-2026}"
mkdir -p "$OUT"
rm -rf "$OUT/ct-dicom"

echo "== starting unetrpp-serve (default model) on port $PORT, metrics on 9464"
"$B/server/unetrpp-serve" --listen "127.0.0.1:$PORT" --metrics "127.0.0.1:9464" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  "$B/clients/upp-client" --server "127.0.0.1:$PORT" health > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
  sleep 0.2
done
"$B/clients/upp-client" --server "127.0.0.1:$PORT" models

echo "== generating phantom $SEED"
"$B/tools/upp-phantom" --seed "$SEED" -o "$OUT/ct.nii.gz" --labels "$OUT/truth.nii.gz" --dicom "$OUT/ct-dicom"

echo "== segmenting the NIfTI file"
"$B/clients/upp-client" --server "127.0.0.1:$PORT" segment "$OUT/ct.nii.gz" \
  -o "$OUT/labels.nii.gz" --png "$OUT/overview.png" --json "$OUT/volumes.json"
echo "== segmenting the DICOM series (DICOM SEG out)"
"$B/clients/upp-client" --server "127.0.0.1:$PORT" segment "$OUT/ct-dicom" --seg "$OUT/labels-seg.dcm" > /dev/null

echo "== Dice against the phantom's truth"
"$B/tools/upp-dice" "$OUT/truth.nii.gz" "$OUT/labels.nii.gz" | tee "$OUT/dice.json"

echo "== stopping the server"
kill -TERM $SERVER
wait $SERVER
trap - EXIT
echo "server exited with status 0; results in $OUT/: labels.nii.gz labels-seg.dcm overview.png volumes.json dice.json"
