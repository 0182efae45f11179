#!/usr/bin/env bash
# Issue 27's proof: a 512 x 512 x 300 CT (a phantom abdomen, tools/phantom.h, in
# a 410 mm field of view at 0.8 x 0.8 x 2.5 mm: the body does not fill it) in
# every speed mode with a published-size network (the synapse preset with random
# weights: a window's time does not depend on the weights), beside the published
# code + MONAI's sliding window on the same network grid as the baseline.
#   full     the plan: step 0.5, Gaussian, the body crop;
#   fast     step FAST_STEP (0.75), no mirroring;
#   fastest  the same network on a 3 mm grid (TotalSegmentator's --fast
#            resolution), as a published-size coarse model would run;
#   liver    the liver only, `full` and `fast`: the shipped coarse phantom model
#            (model/weights/phantom_ct_coarse_v1.safetensors) locates it, then
#            the published-size network runs around it. A published-size locator
#            would cost what `fastest` costs: the summary adds that too.
# OFFICIAL is the folder tools/bench_official.py describes (laid out by hand,
# never committed). The baseline runs once (about 15 minutes on 2 cores); ours
# ROUNDS times, modes alternated. Every run's JSON and peak RSS go to stdout,
# then the medians.
# Usage: deploy/bench-modes.sh OFFICIAL|--no-baseline [ROUNDS] [THREADS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
OFFICIAL="${1:?usage: deploy/bench-modes.sh OFFICIAL|--no-baseline [ROUNDS] [THREADS] [SEED]}"
ROUNDS="${2:-3}"
THREADS="${3:-2}"
SEED="${4:-900000}"
BUILD="${UPP_BUILD_DIR:-build}"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
COARSE=model/weights/phantom_ct_coarse_v1.safetensors
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads=$THREADS; $(date -u '+%F %H:%M UTC'); commit $(git rev-parse --short HEAD)"

# name, then upp-bench-pipeline's flags. One JSON object per run, on one line.
ours() {
  local name="$1" out
  shift
  out="$(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 /usr/bin/time -f "peak_rss_kib=%M" \
    "$BUILD/tools/upp-bench-pipeline" --threads "$THREADS" --size 512 512 300 --spacing 0.8 0.8 2.5 \
    --phantom "$SEED" "$@" 2>&1 | grep -v ' windows$' | tr -d '\n\r')"
  echo "$name $out" | tee -a "$LOG"
}
round() {
  ours full
  ours fast --mode fast
  ours fastest --mode fastest --fastest-spacing 3 3 3
  ours liver_full --labels liver --fastest "$COARSE"
  ours liver_fast --mode fast --labels liver --fastest "$COARSE"
}
round
if [ "$OFFICIAL" != "--no-baseline" ]; then
  # The grid the full run's network saw, (D, H, W) for MONAI.
  GRID="$(sed -n 's/^full .*"grid": \[\([0-9]*\), \([0-9]*\), \([0-9]*\)\].*/\1 \2 \3/p' "$LOG" | head -1)"
  echo "== official network + MONAI sliding window over $GRID (MALLOC_MMAP_MAX_=0, its faster case)"
  out="$(MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 /usr/bin/time -f "peak_rss_kib=%M" \
    "$PY" tools/bench_official.py --official "$OFFICIAL" --threads "$THREADS" sliding --size $GRID 2>&1 | tr -d '\n')"
  echo "official $out" | tee -a "$LOG"
fi
for ((r = 2; r <= ROUNDS; r++)); do round; done

"$PY" - "$LOG" <<'EOF'
import json, re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, _, rest = line.partition(" ")
    m = re.search(r"\{.*\}", rest)
    rss = re.search(r"peak_rss_kib=(\d+)", rest)
    if not m:
        print("no result for", name, rest[:300]); continue
    j = json.loads(m.group(0))
    secs = j["seconds"]["total"] if "seconds" in j else j["official_monai_sliding_window_s"]
    runs.setdefault(name, []).append((secs, j, int(rss.group(1)) / 1024 if rss else float("nan")))
med = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
print("\n| run | windows | seconds (median of %s) | peak RSS MiB |" % ",".join(str(len(v)) for v in runs.values()))
print("|---|---|---|---|")
for k, v in runs.items():
    j = v[0][1]
    w = j.get("windows", "-")
    if j.get("locator_windows"): w = "%s + %s located" % (w, j["locator_windows"])
    print("| %s | %s | %.1f (%s) | %.0f |" % (k, w, med[k], " / ".join("%.1f" % s for s, _, _ in v),
                                             max(r for _, _, r in v)))
if "liver_full" in med and "fastest" in med:
    loc = statistics.median(j["locate_seconds"] for _, j, _ in runs["liver_full"])
    for k in ("liver_full", "liver_fast"):
        print("%s with a published-size locator: %.1f s (%.1f - %.1f located by the small model + %.1f fastest)"
              % (k, med[k] - loc + med["fastest"], med[k], loc, med["fastest"]))
if "official" in med:
    for k in ("full", "fast", "fastest", "liver_full", "liver_fast"):
        if k in med: print("official + MONAI / %s: %.2fx" % (k, med["official"] / med[k]))
EOF
