#!/usr/bin/env bash
# The Debian packages the server needs beyond LibTorch, for a machine that has
# a compiler, CMake and PyTorch's LibTorch but no Debian development packages
# and no network (the project's GPU machines): downloads them with apt (the
# development packages and every library they need, as apt would install them
# on an empty system, less the toolchain and C library such a machine has),
# unpacks them into one prefix and packs that into an archive to carry there.
#
# OpenTelemetry's C++ SDK (tracing/, issue 30) is in bookworm-backports only:
# the script adds that suite first (deploy/apt-backports.sh: from this
# machine's own apt source, pinned to the OpenTelemetry packages; root or
# sudo), and runs apt-get update when apt does not know the package yet, so
# that the GPU build traces (deploy/gpu-check.sh configures it with
# UPP_WITH_OTEL=ON when the bundle has the SDK).
#
# Usage: deploy/gpu-bundle.sh [DIR]        (default .gpu/bundle; .gpu/ is git-ignored)
#        deploy/gpu-bundle.sh --resolve    (backports set up; prints the packages it would
#                                           bundle, downloads nothing)
# Gives DIR/usr/... (the packages' files), DIR/env.sh and DIR.tar.xz.
# Use, on any machine, after unpacking the archive somewhere:
#   source DIR/env.sh        # PATH, LD_LIBRARY_PATH, PKG_CONFIG_PATH, UPP_DEPS_PREFIX
#   cmake -S . -B build -DUPP_DEPS_PREFIX="$UPP_DEPS_PREFIX" ...
# deploy/gpu-bundle-test.sh proves that a build from the bundle alone works.
set -euo pipefail
cd "$(dirname "$0")/.."
RESOLVE_ONLY=false
if [ "${1:-}" = "--resolve" ]; then
  RESOLVE_ONLY=true
  shift
fi
DIR="${1:-.gpu/bundle}"

# What the build needs (deploy/install-deps.sh's BUILD_PACKAGES less the
# toolchain, LibTorch and cairo: build with -DUPP_WITH_CAIRO=OFF, upp-client
# without its overview picture; cairo and X11 would double the archive) and the test
# framework.
PACKAGES=(
  libabsl-dev zlib1g-dev libdeflate-dev libdcmtk-dev libopenjp2-7-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev libspdlog-dev libssl-dev
  libjwt-dev nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev pkgconf
  opentelemetry-cpp-dev
)
# Packages every build machine has (the C library and the compiler's runtime,
# which must be the machine's own), and tools the build never runs.
EXCLUDE='^(libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt1|libcrypt-dev|libgcc-s1|libstdc\+\+6|gcc-[0-9]+-base|debconf|dpkg|tar|lsb-base|sysvinit-utils|python3.*|libpython3.*|readline-common|libreadline8|libtinfo6|libncursesw6|media-types|libnsl2|libnsl-dev|libtirpc3|libtirpc-dev|libtirpc-common|rpcsvc-proto|libglib2.0-bin|libglib2.0-dev-bin|icu-devtools|xorg-sgml-doctools)$'

# bookworm-backports for the OpenTelemetry packages, as deploy/install-deps.sh
# adds it; apt's lists refreshed once if they do not have the package yet.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
bash deploy/apt-backports.sh
# (apt-cache's answer read whole first: under pipefail, grep -q quitting at
# its match would fail the pipe with SIGPIPE.)
otel_known() { [[ "$(apt-cache policy opentelemetry-cpp-dev 2>/dev/null)" =~ Candidate:\ [0-9] ]]; }
if ! otel_known; then
  $SUDO apt-get update -q
fi
if ! otel_known; then
  echo "gpu-bundle: apt has no opentelemetry-cpp-dev even from bookworm-backports" >&2
  exit 1
fi

# The packages apt would install on an empty system, alternatives resolved
# as apt resolves them.
mapfile -t ALL < <(apt-get -s -o Dir::State::status=/dev/null --no-install-recommends install "${PACKAGES[@]}" 2>/dev/null |
  awk '/^Inst /{print $2}' | sort -u)
[ "${#ALL[@]}" -gt 0 ] || { echo "gpu-bundle: apt resolved nothing (apt-get update?)" >&2; exit 1; }
WANT=()
for p in "${ALL[@]}"; do [[ "$p" =~ $EXCLUDE ]] || WANT+=("$p"); done
echo "gpu-bundle: ${#WANT[@]} of ${#ALL[@]} packages (the rest are the toolchain and C library)"
# The SDK must be among them: without it the GPU build would trace nothing.
for p in opentelemetry-cpp opentelemetry-cpp-dev; do
  [[ " ${WANT[*]} " == *" $p "* ]] || { echo "gpu-bundle: apt did not resolve $p" >&2; exit 1; }
done
if $RESOLVE_ONLY; then
  printf '%s\n' "${WANT[@]}"
  exit 0
fi

DEBS="$(dirname "$DIR")/debs"
mkdir -p "$DEBS"
(cd "$DEBS" && apt-get download -q "${WANT[@]}" >/dev/null)

rm -rf "$DIR"
mkdir -p "$DIR"
for p in "${WANT[@]}"; do
  deb=$(ls "$DEBS/${p}_"*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "gpu-bundle: $p was not downloaded" >&2; exit 1; }
  dpkg-deb -x "$deb" "$DIR"
done

# Not needed to build or run: documentation, translations, fonts' and
# locales' data, and static libraries where a shared one exists.
rm -rf "$DIR"/usr/share/{doc,man,info,locale,lintian,bug,gtk-doc} "$DIR"/etc/init.d
LIB="$DIR/usr/lib/x86_64-linux-gnu"
for a in "$LIB"/*.a; do
  [ -e "${a%.a}.so" ] && rm -f "$a"
done
# Absolute links (dpkg's view of /usr) made relative, so the prefix can move.
find "$DIR" -type l -lname '/*' | while read -r link; do
  target="$(readlink "$link")"
  ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$DIR$target")" "$link"
done

# CMake packages that name the libraries they depend on by absolute path
# (DCMTK: zlib, libxml2, OpenSSL, ...): relative to the package's own
# location instead, which CMake computes as _IMPORT_PREFIX.
find "$DIR/usr/lib/x86_64-linux-gnu/cmake" -name '*.cmake' -exec \
  sed -i -E 's#([";])/usr/lib/x86_64-linux-gnu/lib#\1${_IMPORT_PREFIX}/lib/x86_64-linux-gnu/lib#g' {} +
if grep -rlE '[";]/usr/lib/x86_64-linux-gnu/lib' "$DIR/usr/lib/x86_64-linux-gnu/cmake"; then
  echo "gpu-bundle: absolute library paths left in the CMake packages above" >&2
  exit 1
fi

# pkg-config files name /usr; env.sh rewrites them for wherever the prefix
# is, each time it is sourced (the prefix moves with the archive).
cat >"$DIR/env.sh" <<'ENV'
# Source this file: the bundle's tools, libraries and pkg-config files first.
UPP_DEPS_PREFIX="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/usr"
export UPP_DEPS_PREFIX
for pc in "$UPP_DEPS_PREFIX"/lib/x86_64-linux-gnu/pkgconfig/*.pc "$UPP_DEPS_PREFIX"/share/pkgconfig/*.pc; do
  [ -e "$pc" ] && sed -i -E "s#^prefix=.*#prefix=$UPP_DEPS_PREFIX#; s#=/usr/#=$UPP_DEPS_PREFIX/#g; s# -I/usr/# -I$UPP_DEPS_PREFIX/#g" "$pc"
done
export PATH="$UPP_DEPS_PREFIX/bin:$PATH"
export LD_LIBRARY_PATH="$UPP_DEPS_PREFIX/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$UPP_DEPS_PREFIX/lib/x86_64-linux-gnu/pkgconfig:$UPP_DEPS_PREFIX/share/pkgconfig"
export PKG_CONFIG="$UPP_DEPS_PREFIX/bin/pkgconf"
ENV

tar -C "$(dirname "$DIR")" -cJf "$DIR.tar.xz" "$(basename "$DIR")"
echo "gpu-bundle: $(du -sh "$DIR" | cut -f1) unpacked, $(du -h "$DIR.tar.xz" | cut -f1) packed: $DIR.tar.xz"
