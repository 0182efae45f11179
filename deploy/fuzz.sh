#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a
# bounded time, seeded with real files: nibabel's NIfTI and pydicom's DICOM
# test data.
# Usage: deploy/fuzz.sh [SECONDS_PER_TARGET]   (CI runs it with 30)
# Five targets: the NIfTI reader, the DICOM series reader, a JPEG 2000
# frame (the header read before OpenJPEG, then OpenJPEG), sequences of
# SegmentRequest messages through the server's request logic, and the
# gateway's STOW-RS multipart layer.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-30}"
BUILD="${UPP_FUZZ_BUILD_DIR:-build-fuzz}"
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DUPP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j "${UPP_JOBS:-2}"

# Runs one target; on a finding prints libFuzzer's whole report (the stack of
# the crash or of the oversized allocation), not only the statistics, so that
# a CI log is enough to reproduce and fix it.
run_target() {
  local name="$1" corpus="$2" seeds="$3" max_len="$4" log="$BUILD/$1.log"
  local regressions="tests/fuzz/regressions/${name%_fuzzer}"
  # Past findings first: each must now run clean (libFuzzer runs the files
  # given and exits non-zero on any finding).
  if [ -d "$regressions" ]; then
    "$BUILD/tests/fuzz/$name" -rss_limit_mb=2048 -timeout=10 "$regressions"/* >"$log" 2>&1 || {
      sed -n '/^==[0-9]*==\|ERROR: libFuzzer\|out-of-memory/,$p' "$log" | head -120
      echo "fuzz: $name FAILED on a past finding in $regressions"
      return 1
    }
    echo "fuzz: $name: $(ls "$regressions" | wc -l) past findings run clean"
  fi
  if "$BUILD/tests/fuzz/$name" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix="$BUILD/$name-" "$corpus" "$seeds" >"$log" 2>&1; then
    tail -6 "$log"
    echo "fuzz: $name passed (no crash in ${SECONDS_PER_TARGET}s)"
  else
    sed -n '/^==[0-9]*==\|ERROR: libFuzzer\|out-of-memory/,$p' "$log" | head -120
    echo "fuzz: $name FAILED; the input is $(ls "$BUILD/$name-"* 2>/dev/null | tail -1)"
    return 1
  fi
}

NIB=$(/usr/bin/python3 -c 'import os, nibabel; print(os.path.join(os.path.dirname(nibabel.__file__), "tests", "data"))')
SEEDS="$BUILD/seeds/nifti"
mkdir -p "$SEEDS" "$BUILD/corpus/nifti"
cp "$NIB"/*.nii "$NIB"/*.nii.gz "$SEEDS"/ 2>/dev/null || true
echo "fuzz: nifti_fuzzer for ${SECONDS_PER_TARGET}s, $(ls "$SEEDS" | wc -l) seed files"
run_target nifti_fuzzer "$BUILD/corpus/nifti" "$SEEDS" 1048576

PYD=$(/usr/bin/python3 -c 'import os, pydicom; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')
DSEEDS="$BUILD/seeds/dicom"
mkdir -p "$DSEEDS" "$BUILD/corpus/dicom"
for f in CT_small.dcm MR_small.dcm MR_small_RLE.dcm MR_small_jpeg_ls_lossless.dcm MR_small_bigendian.dcm \
         MR_small_implicit.dcm JPGExtended.dcm rtdose_1frame.dcm image_dfl.dcm MR_small_jp2klossless.dcm \
         JPEG2000.dcm 693_J2KI.dcm J2K_pixelrep_mismatch.dcm; do
  [ -f "$PYD/$f" ] && cp "$PYD/$f" "$DSEEDS/"
done
echo "fuzz: dicom_fuzzer for ${SECONDS_PER_TARGET}s, $(ls "$DSEEDS" | wc -l) seed files"
# libFuzzer's default malloc limit (= the RSS limit, 2 GiB) applies: element
# lengths, tag order and counts are checked before DCMTK parses
# (imageio/dicom_lengths.h), the pixel layout and each JPEG frame header
# before DCMTK decodes (dicom.cc), each JPEG 2000 main header before
# OpenJPEG (jpeg2000_header.h), so no claim in a small input turns into a
# large allocation.
run_target dicom_fuzzer "$BUILD/corpus/dicom" "$DSEEDS" 262144

# JPEG 2000 frames: the first frame of pydicom's JPEG 2000 files, as a bare
# codestream and wrapped in a minimal JP2 file (signature, ftyp, jp2h, jp2c).
JSEEDS="$BUILD/seeds/jpeg2000"
mkdir -p "$JSEEDS" "$BUILD/corpus/jpeg2000"
/usr/bin/python3 - "$PYD" "$JSEEDS" <<'PY'
import os, struct, sys
import pydicom
from pydicom.encaps import generate_pixel_data_frame
def box(kind, payload):
    return struct.pack(">I", 8 + len(payload)) + kind + payload
for name in ["MR_small_jp2klossless.dcm", "JPEG2000.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"]:
    path = os.path.join(sys.argv[1], name)
    if not os.path.exists(path):
        continue
    ds = pydicom.dcmread(path)
    frame = next(generate_pixel_data_frame(ds.PixelData))
    stem = os.path.join(sys.argv[2], name[:-4])
    open(stem + ".j2k", "wb").write(frame)
    ihdr = struct.pack(">IIHBBBB", ds.Rows, ds.Columns, 1, ds.BitsStored - 1, 7, 0, 0)
    colr = bytes([1, 0, 0]) + struct.pack(">I", 17)  # enumerated: greyscale
    jp2 = (box(b"jP  ", b"\r\n\x87\n") + box(b"ftyp", b"jp2 " + b"\0\0\0\0" + b"jp2 ")
           + box(b"jp2h", box(b"ihdr", ihdr) + box(b"colr", colr)) + box(b"jp2c", frame))
    open(stem + ".jp2", "wb").write(jp2)
PY
echo "fuzz: jpeg2000_fuzzer for ${SECONDS_PER_TARGET}s, $(ls "$JSEEDS" | wc -l) seed files"
run_target jpeg2000_fuzzer "$BUILD/corpus/jpeg2000" "$JSEEDS" 262144

# Request sequences: seeds are a header, a NIfTI of nibabel's in one chunk,
# and the end marker (tests/fuzz/request_fuzzer.cc gives the record format).
RSEEDS="$BUILD/seeds/request"
mkdir -p "$RSEEDS" "$BUILD/corpus/request"
for f in "$NIB"/example4d.nii.gz "$NIB"/standard.nii.gz "$NIB"/anatomical.nii; do
  [ -f "$f" ] || continue
  [ "$(stat -c %s "$f")" -lt 65000 ] || continue
  /usr/bin/python3 - "$f" "$RSEEDS/$(basename "$f").seq" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
def record(kind, payload):
    return bytes([kind]) + struct.pack("<H", len(payload)) + payload
header = b"\x10\x01"  # RequestHeader.format = NIFTI (field 2, varint 1)
open(sys.argv[2], "wb").write(record(0, header) + record(1, b"\x00" + data) + record(2, b""))
PY
done
# Two channels of a small synthetic volume, one NIfTI each (the multi-file path).
/usr/bin/python3 - "$RSEEDS/two_channels.seq" <<'PY'
import gzip, struct, sys
import nibabel, numpy
def nifti(seed):
    data = (numpy.arange(6 * 5 * 4, dtype=numpy.float32).reshape(6, 5, 4) * seed)
    img = nibabel.Nifti1Image(data, numpy.diag([1.5, 1.5, 3.0, 1.0]))
    return gzip.compress(img.to_bytes()) if seed > 1 else img.to_bytes()
def record(kind, payload):
    return bytes([kind]) + struct.pack("<H", len(payload)) + payload
header = b"\x10\x01\x18\x03"  # format NIFTI, outputs RAW_LABELS
open(sys.argv[1], "wb").write(record(0, header) + record(1, b"\x00" + nifti(1)) + record(1, b"\x01" + nifti(2)) + record(2, b""))
PY
echo "fuzz: request_fuzzer for ${SECONDS_PER_TARGET}s, $(ls "$RSEEDS" | wc -l) seed files"
run_target request_fuzzer "$BUILD/corpus/request" "$RSEEDS" 262144

# STOW-RS bodies (tests/fuzz/multipart_fuzzer.cc: a Content-Type line, a
# control byte, the body): two parts with a CT slice, and Orthanc's long
# boundary with transport padding and a part without headers.
MSEEDS="$BUILD/seeds/multipart"
mkdir -p "$MSEEDS" "$BUILD/corpus/multipart"
/usr/bin/python3 - "$PYD" "$MSEEDS" <<'PY'
import os, sys
ct = open(os.path.join(sys.argv[1], "CT_small.dcm"), "rb").read()[:4000]
b = b"c9c70dc7-731d-4e1e-81e2-f8a7d2787152-c9c70dc7-731d-4e1e-81e2-f8a7d2787152"
open(os.path.join(sys.argv[2], "two_parts"), "wb").write(
    b'multipart/related; type="application/dicom"; boundary=BOUND\n\x05--BOUND\r\nContent-Type: application/dicom\r\n\r\n'
    + ct + b"\r\n--BOUND\r\nContent-Type: application/dicom\r\n\r\nDICM\r\n--BOUND--\r\n")
open(os.path.join(sys.argv[2], "orthanc"), "wb").write(
    b'multipart/related; type="application/dicom"; boundary=' + b + b"\n\x3f--" + b + b"  \r\n\r\n" + ct[:500]
    + b"\r\n--" + b + b"--\r\nepilogue")
PY
echo "fuzz: multipart_fuzzer for ${SECONDS_PER_TARGET}s, $(ls "$MSEEDS" | wc -l) seed files"
run_target multipart_fuzzer "$BUILD/corpus/multipart" "$MSEEDS" 65536
