#!/usr/bin/env bash
# Scale-out and failover on one machine, with the behaviour Kubernetes relies
# on: three replicas on loopback addresses (127.0.0.2-4, as three pods behind
# a headless service), clients with gRPC round-robin over them and retries on
# UNAVAILABLE (upp-scale-load), and one replica stopped with SIGTERM in the
# middle of the load, as a scale-down or node drain does. Checks: every
# request ends OK (none lost), the stopped replica drains and exits 0, every
# replica served requests. Records per replica, once a second, the HPA's
# metric (the one deploy/k8s/base/hpa.yaml names) and what the HPA would
# decide (seconds spent at each desired replica count), and the requests
# each served.
# Usage: deploy/scale-test.sh [SECONDS] [CLIENTS]   (after deploy/build.sh)
# UPP_SCALE_INPLANE / UPP_SCALE_SLICES: the phantom's largest size (default 96 x 48: one window).
# Output: $UPP_SCALE_DIR (default scale-output/): samples.csv, load.json, summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${UPP_BUILD_DIR:-build}"
SECONDS_OF_LOAD="${1:-60}"
CLIENTS="${2:-6}"
OUT="${UPP_SCALE_DIR:-scale-output}"
PORT=50061
METRICS_PORT=9465
REPLICAS=(127.0.0.2 127.0.0.3 127.0.0.4)
STOPPED=127.0.0.3
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/samples.csv

declare -A PIDS
cleanup() { for ip in "${!PIDS[@]}"; do kill "${PIDS[$ip]}" 2>/dev/null || true; done; }
trap cleanup EXIT

for ip in "${REPLICAS[@]}"; do
  cat >"$OUT/server-$ip.textproto" <<CONF
listen_address: "$ip:$PORT"
metrics_address: "$ip:$METRICS_PORT"
cpu_threads: 1
intra_op_threads: 1
drain_grace_seconds: 60
batching { max_batch_size: 2 max_queue_delay_us: 2000 }
models { name: "phantom-ct" weights: "model/weights/phantom_ct_v1.safetensors" modality: "CT" }
CONF
  "$B/server/unetrpp-serve" --config "$OUT/server-$ip.textproto" >"$OUT/server-$ip.log" 2>&1 &
  PIDS[$ip]=$!
done
for ip in "${REPLICAS[@]}"; do
  for _ in $(seq 1 300); do
    "$B/clients/upp-client" --server "$ip:$PORT" health >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$B/clients/upp-client" --server "$ip:$PORT" health >/dev/null || { cat "$OUT/server-$ip.log"; exit 1; }
done
echo "scale-test: 3 replicas serving on ${REPLICAS[*]} (port $PORT)"

"$B/tools/upp-phantom" --seed 11 --max-inplane "${UPP_SCALE_INPLANE:-96}" --max-slices "${UPP_SCALE_SLICES:-48}" \
  -o "$OUT/ct.nii.gz" >/dev/null

# Once a second: each replica's queue, requests in flight and requests served.
/usr/bin/python3 - "$OUT/samples.csv" "$METRICS_PORT" "${REPLICAS[@]}" <<'PY' &
import re, sys, time, urllib.request
out, port, replicas = sys.argv[1], sys.argv[2], sys.argv[3:]
def scrape(ip):
    try:
        t = urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=0.5).read().decode()
    except Exception:
        return None
    def total(name, extra=""):
        return sum(float(v) for v in re.findall(rf'^{name}(?:\{{[^}}]*{extra}[^}}]*\}})? (\S+)', t, re.M))
    return total("upp_queued_windows"), total("upp_requests_in_flight"), total("upp_requests_total", 'code="OK"')
start = time.monotonic()
with open(out, "w") as f:
    f.write("t,replica,up,queued_windows,in_flight,requests_ok\n")
    while True:
        t = time.monotonic() - start
        for ip in replicas:
            s = scrape(ip)
            f.write(f"{t:.1f},{ip},{int(s is not None)},{','.join('%g' % v for v in (s or (0, 0, 0)))}\n")
        f.flush()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start - t)))
PY
SAMPLER=$!

"$B/tools/upp-scale-load" --target "ipv4:$(printf '%s:'"$PORT"',' "${REPLICAS[@]}" | sed 's/,$//')" \
  --input "$OUT/ct.nii.gz" --clients "$CLIENTS" --seconds "$SECONDS_OF_LOAD" --attempts 8 >"$OUT/load.json" &
LOAD=$!
sleep "$((SECONDS_OF_LOAD / 3))"
echo "scale-test: SIGTERM to $STOPPED at $((SECONDS_OF_LOAD / 3)) s"
kill -TERM "${PIDS[$STOPPED]}"
stopped_status=0
wait "${PIDS[$STOPPED]}" || stopped_status=$?
unset "PIDS[$STOPPED]"
echo "scale-test: $STOPPED exited with status $stopped_status"
wait "$LOAD"
kill "$SAMPLER" 2>/dev/null || true

/usr/bin/python3 - "$OUT" "$stopped_status" "$STOPPED" deploy/k8s/base/hpa.yaml <<'PY'
import csv, json, math, re, sys
out, stopped_status, stopped, hpa = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
hpa_text = open(hpa).read()
target = float(re.search(r'averageValue: "(\d+)"', hpa_text).group(1))
metric = re.search(r'metric:\s*\n\s*name: (\S+)', hpa_text).group(1)
column = {"upp_requests_in_flight": "in_flight", "upp_queued_windows": "queued_windows"}[metric]
load = json.load(open(f"{out}/load.json"))
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
served, decisions = {}, []
for t in sorted({r["t"] for r in rows}, key=float):
    up = [r for r in rows if r["t"] == t and r["up"] == "1"]
    for r in up:
        served[r["replica"]] = max(served.get(r["replica"], 0), float(r["requests_ok"]))
    if up:  # the HPA formula: desired = ceil(ready * mean(metric) / target)
        mean = sum(float(r[column]) for r in up) / len(up)
        decisions.append({"t": float(t), "ready": len(up), "mean": mean,
                          "desired": max(1, math.ceil(len(up) * mean / target))})
summary = {"load": load, "served_per_replica": served, "stopped_replica": stopped,
           "stopped_exit_status": stopped_status, "hpa_metric": metric, "hpa_target_per_pod": target,
           "hpa_peak_mean_per_pod": max(d["mean"] for d in decisions),
           "hpa_desired_replicas": {str(n): sum(d["desired"] == n for d in decisions)
                                    for n in sorted({d["desired"] for d in decisions})}}
json.dump({**summary, "hpa_decisions": decisions}, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
problems = []
if load["lost"] != 0: problems.append(f"{load['lost']} requests lost: {load['codes']}")
if load["ok"] == 0: problems.append("no request completed")
if stopped_status != 0: problems.append(f"the stopped replica exited with {stopped_status}")
if len([r for r, n in served.items() if n > 0]) != 3: problems.append(f"not every replica served: {served}")
if problems:
    sys.exit("scale-test: FAILED: " + "; ".join(problems))
print("scale-test: passed")
PY
