#!/usr/bin/env bash
# Makes the Dockerfile's base image (debian:bookworm-slim by default) locally,
# for machines that reach Debian's archive but no container registry: a
# minimal debootstrap of bookworm from the machine's own apt source, trimmed
# like the slim image (no docs, man pages or locales), imported under the
# name the Dockerfile's BASE argument uses.
#
# Usage: deploy/docker/make-base-image.sh [IMAGE_NAME]   (needs root, docker)
# Does nothing when the image already exists (locally or by `docker pull`).
# The archive's address is read from apt's configuration here, at run time.
set -euo pipefail
IMAGE="${1:-debian:bookworm-slim}"
DOCKER="${DOCKER:-docker}"

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "base image: $IMAGE exists"
  exit 0
fi
if timeout 60 "$DOCKER" pull -q "$IMAGE" >/dev/null 2>&1; then
  echo "base image: $IMAGE pulled"
  exit 0
fi

# The configured sources, as apt itself resolved them: "URI SUITE" pairs.
mapfile -t SOURCES < <(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' | sort -u)
MIRROR=""
for s in "${SOURCES[@]}"; do
  read -r uri suite <<<"$s"
  if [ "$suite" = bookworm ]; then MIRROR="$uri"; fi
done
if [ -z "$MIRROR" ]; then
  echo "base image: no bookworm source in apt's configuration" >&2
  exit 1
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null

ROOT="$(mktemp -d /var/tmp/upp-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "base image: debootstrap bookworm (minbase) into $ROOT"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
  tail -20 "$ROOT.log" >&2
  exit 1
}
rm -f "$ROOT.log"

# The same sources as this machine (security and updates included), so that
# packages installed in the image match the host's.
{
  echo "# written by deploy/docker/make-base-image.sh from the build machine's apt configuration"
  for s in "${SOURCES[@]}"; do
    read -r uri suite <<<"$s"
    echo "deb $uri $suite main"
  done
} >"$ROOT/etc/apt/sources.list"
# Trimmed as debian:*-slim is: no documentation or locales in later layers.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
echo 'APT::Install-Recommends "false";' >"$ROOT/etc/apt/apt.conf.d/docker-no-recommends"
rm -rf "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* \
  "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
tar -C "$ROOT" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "base image: $IMAGE imported ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE") bytes)"
