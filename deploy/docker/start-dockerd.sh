#!/usr/bin/env bash
# Starts a Docker engine (Debian's docker.io) where none answers, for the
# image build and test on machines without a service manager. Containers on
# such machines use the host's network (--network host): dockerd runs with
# --iptables=false --bridge=none. Storage: overlay2 where the kernel mounts
# an overlay here (layers are diffs), else vfs (every layer a full copy:
# slow and disk-hungry with a multi-GB build stage).
# Usage: deploy/docker/start-dockerd.sh      (root; prints the engine's storage driver)
# The engine's log: /var/log/upp-dockerd.log.
set -euo pipefail
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"

if "$DOCKER" info >/dev/null 2>&1; then
  echo "dockerd: running ($("$DOCKER" info -f '{{.Driver}}'))"
  exit 0
fi
command -v dockerd >/dev/null || { echo "dockerd: not installed (deploy/install-deps.sh installs docker.io)" >&2; exit 1; }

driver=vfs
probe="$(mktemp -d)"
mkdir -p "$probe"/{lower,upper,work,merged}
if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" 2>/dev/null; then
  umount "$probe/merged"
  driver=overlay2
fi
rm -rf "$probe"

nohup dockerd --storage-driver "$driver" --iptables=false --ip-masq=false --bridge=none \
  >/var/log/upp-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if "$DOCKER" info >/dev/null 2>&1; then
    echo "dockerd: started ($driver)"
    exit 0
  fi
  sleep 1
done
echo "dockerd: did not answer within 60 s; its log:" >&2
tail -20 /var/log/upp-dockerd.log >&2
exit 1
