#!/usr/bin/env bash
# Packs a server built outside Docker (the CUDA build on a GPU host, made by
# deploy/gpu-check.sh against PyTorch's LibTorch and deploy/gpu-bundle.sh's
# packages) into a self-contained tree for deploy/docker/Dockerfile.prebuilt:
#   DEST/bin/   unetrpp-serve (and unetrpp-dicom-gateway where it was built)
#   DEST/lib/   every shared library the binaries load that a bare Debian 12
#               lacks: the ldd closure, plus whole library folders that
#               libraries open at run time without ldd seeing it (LibTorch's
#               own folder; with a pip PyTorch, the nvidia-* wheels' cuDNN,
#               cuBLAS, NVRTC ... folders)
#   DEST/share/ the default model's weights
# Left out: the C library and compiler runtime (the base image's own) and the
# NVIDIA driver's libraries (libcuda, libnvidia-ml: the container runtime
# mounts the host's, which must match its kernel module).
#
# Usage: deploy/docker/package-prebuilt.sh BUILD_DIR DEST [LIB_DIR ...]
#   with a pip PyTorch: LIB_DIRs $(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib
#   and the site-packages' nvidia/*/lib folders (deploy/gpu-check.sh passes them).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD="${1:?usage: package-prebuilt.sh BUILD_DIR DEST [LIB_DIR ...]}"
DEST="${2:?usage: package-prebuilt.sh BUILD_DIR DEST [LIB_DIR ...]}"
shift 2
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib" "$DEST/share/unetrpp-serve"
install -m 755 "$BUILD/server/unetrpp-serve" "$DEST/bin/"
# The gateway where it was built; upp-client: the Kubernetes probes run it.
for extra in gateway/unetrpp-dicom-gateway clients/upp-client; do
  if [ -x "$BUILD/$extra" ]; then install -m 755 "$BUILD/$extra" "$DEST/bin/"; fi
done
install -m 644 model/weights/phantom_ct_v1.safetensors model/weights/phantom_ct_coarse_v1.safetensors \
  "$DEST/share/unetrpp-serve/"

# The base system's libraries (glibc, libmvec included: it reads the loader's
# private CPU data, so it must be the image's own glibc's; the compiler
# runtime) and the driver's.
SKIP='^(ld-linux-x86-64|libc|libm|libmvec|libdl|libpthread|librt|libutil|libresolv|libanl|libstdc\+\+|libgcc_s|libcuda|libnvidia-.*)\.so'
copy_lib() {
  local name
  name=$(basename "$1")
  [[ "$name" =~ $SKIP ]] && return 0
  [ -e "$DEST/lib/$name" ] || cp -L "$1" "$DEST/lib/$name"
}
for dir in "$@"; do
  for f in "$dir"/*.so*; do [ -f "$f" ] && copy_lib "$f"; done
done
# The closure, with the run-time folders on the search path as the loader
# will have them (DEST/lib first).
for bin in "$DEST"/bin/*; do
  LD_LIBRARY_PATH="$DEST/lib:${LD_LIBRARY_PATH:-}" ldd "$bin" | awk '/=> \//{print $3}' |
    while read -r lib; do copy_lib "$lib"; done
done
missing=$(for bin in "$DEST"/bin/*; do LD_LIBRARY_PATH="$DEST/lib" ldd "$bin"; done | grep -c "not found" || true)
[ "$missing" = 0 ] || { echo "package-prebuilt: $missing libraries not found" >&2; exit 1; }
echo "package-prebuilt: $(ls "$DEST/lib" | wc -l) libraries, $(du -sh "$DEST" | cut -f1) in $DEST"
