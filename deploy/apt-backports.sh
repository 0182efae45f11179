#!/usr/bin/env bash
# Adds Debian 12's bookworm-backports suite, taken from the apt source this
# machine already has (its URI and key, read now: the repository names no
# mirror), and pins it so that only the packages named below can come from
# it; everything else stays on bookworm. Idempotent; run as root (or with
# sudo). deploy/install-deps.sh and the Dockerfile's stages call it.
#
#   deploy/apt-backports.sh          add the suite and the pin (no apt-get update)
#   deploy/apt-backports.sh --print  print what it would write, change nothing
#
# Why: OpenTelemetry's C++ SDK (tracing/, issue 30) is in bookworm-backports
# only, built there against bookworm's gRPC 1.51, protobuf 3.21 and Abseil.
set -euo pipefail

# The packages allowed from backports: OpenTelemetry C++ (opentelemetry-cpp:
# its shared libraries, OTLP exporters included; -dev: headers and CMake
# files) and the OTLP .proto files, as files and as Python modules (the
# tests' collector). Their other dependencies are bookworm's own.
BACKPORTED="opentelemetry-cpp opentelemetry-cpp-dev libopentelemetry-proto-dev python3-opentelemetry-proto"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
SOURCES=/etc/apt/sources.list.d/upp-bookworm-backports.sources
PREFERENCES=/etc/apt/preferences.d/upp-bookworm-backports

# The URI and key of the configured source that carries the suite
# "bookworm" (deb822 .sources first, then one-line .list files).
find_source() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$SOURCES" ] || continue
    # Stanzas are separated by blank lines; fields may be in any order.
    awk 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uri = ""; suites = ""; key = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          split(line, kv, ":")
          name = tolower(kv[1]); value = substr(line, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", value)
          if (name == "types") types = value
          else if (name == "uris") uri = value
          else if (name == "suites") suites = value
          else if (name == "signed-by") key = value
          else if (name == "enabled") enabled = tolower(value)
        }
        if (enabled == "no" || (" " types " ") !~ / deb /) next
        n = split(suites, s, /[ \t]+/)
        for (j = 1; j <= n; j++) if (s[j] == "bookworm") { split(uri, u, /[ \t]+/); print u[1] "\t" key; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk '$1 == "deb" {
        key = ""; i = 2
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            if ($i ~ /signed-by=/) { key = $i; sub(/.*signed-by=/, "", key); sub(/\]$/, "", key) }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        if ($(i + 1) == "bookworm") { print $i "\t" key; exit }
      }' "$f"
  done
}

# A configured source that has bookworm-backports already (the pin is
# still written: it is what keeps everything else on bookworm).
has_backports() {
  grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ --exclude="$(basename "$SOURCES")"
}

found=$(find_source | head -n 1)
uri=${found%%$'\t'*}
key=${found#*$'\t'}
if [ -z "$found" ] || [ -z "$uri" ]; then
  echo "apt-backports: no configured apt source carries bookworm; add one (Debian 12) first" >&2
  exit 1
fi

sources_text="# Written by unetrpp-serve's deploy/apt-backports.sh: bookworm-backports
# from the same archive as this machine's bookworm source.
Types: deb
URIs: ${uri}
Suites: bookworm-backports
Components: main
${key:+Signed-By: ${key}
}"

preferences_text="# Written by unetrpp-serve's deploy/apt-backports.sh: only these packages
# may come from bookworm-backports; nothing else moves.
Package: ${BACKPORTED}
Pin: release n=bookworm-backports
Pin-Priority: 500

Package: *
Pin: release n=bookworm-backports
Pin-Priority: -1
"

if [ "${1:-}" = "--print" ]; then
  has_backports && echo "# (a configured source has bookworm-backports already: $SOURCES would not be written)"
  printf '# %s\n%s\n# %s\n%s' "$SOURCES" "$sources_text" "$PREFERENCES" "$preferences_text"
  exit 0
fi

if ! has_backports; then
  printf '%s' "$sources_text" | $SUDO tee "$SOURCES" >/dev/null
fi
printf '%s' "$preferences_text" | $SUDO tee "$PREFERENCES" >/dev/null
echo "apt-backports: bookworm-backports from ${uri}, pinned to: ${BACKPORTED}"
