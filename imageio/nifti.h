// NIfTI-1 and NIfTI-2 input (.nii and .nii.gz, from memory or a file).
//
// Reads every integer and float datatype in either byte order, applies
// scl_slope/scl_inter, takes the orientation the standard prescribes (sform
// when sform_code > 0, else qform when qform_code > 0, else pixdim only) and
// converts it from NIfTI's RAS to the project's LPS. A 4th dimension becomes
// channels. Every header field is checked before anything is allocated from
// it, and the voxel count is bounded by NiftiReadOptions::max_voxels.
//
// Written here rather than with nifticlib (libnifti2): that library reads
// files only (the service receives bytes), aborts or prints on bad input,
// and has no bound on what a header can make it allocate.
//
// Thread-safe (no shared state).
#ifndef UPP_IMAGEIO_NIFTI_H_
#define UPP_IMAGEIO_NIFTI_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "imageio/volume.h"

namespace upp::imageio {

struct NiftiReadOptions {
  // Voxels (all channels) a file may hold; more is RESOURCE_EXHAUSTED.
  int64_t max_voxels = int64_t{1} << 30;
  // Called once the header is checked and before any voxel is inflated or
  // converted, with the image's geometry, its channels and the bytes reading
  // it will allocate; a non-OK status ends the read with that status. The
  // server reserves memory here (admission before decoding).
  std::function<absl::Status(const Geometry&, int64_t channels, int64_t read_bytes)> admit;
  // Asked before each kNiftiChunkBytes of gzip data are inflated and before
  // each kNiftiChunkBytes of float voxels are converted: true ends the read
  // with CANCELLED. The server's call asks whether it is still alive, so
  // that a call whose client left stops decoding within a chunk (a 1 GiB
  // image takes seconds to inflate and convert) instead of holding a CPU
  // thread for nobody. With it, an image of more than one chunk is inflated
  // by zlib in chunks rather than by libdeflate whole.
  std::function<bool()> cancelled;
};

// The unit of work between two questions to NiftiReadOptions::cancelled: at
// most 64 MiB inflated (about 0.15 s with zlib here) or 16 Mi voxels
// converted.
inline constexpr int64_t kNiftiChunkBytes = int64_t{64} << 20;

// What the writer needs to give a result the input's header conventions.
struct NiftiHeaderInfo {
  int version = 1;  // 1 or 2
  int datatype = 0;
  int qform_code = 0;
  int sform_code = 0;
  int xyzt_units = 0;
  bool big_endian = false;
};

struct NiftiImage {
  Volume volume;
  NiftiHeaderInfo header;
};

absl::StatusOr<NiftiImage> ReadNifti(std::string_view bytes, const NiftiReadOptions& options = {});

// A label map (one label per voxel, x fastest) as a gzip-compressed NIfTI
// file with exactly `geometry`: sform and qform both written (LPS converted
// back to RAS), with the codes of `like` (the input's header; both 0 stays
// pixdim-only, as the input was; a non-NIfTI input should pass codes 1).
// uint8 when every label is <= 255, else uint16; NIfTI-2 only when a
// dimension exceeds NIfTI-1's 32767. Intent "label".
absl::StatusOr<std::string> WriteNiftiLabels(const Geometry& geometry, const std::vector<uint16_t>& labels,
                                             const NiftiHeaderInfo& like);
// An int16 image (e.g. CT in HU) as .nii.gz with exactly `geometry`, written
// like WriteNiftiLabels (no intent, no scaling).
absl::StatusOr<std::string> WriteNiftiInt16(const Geometry& geometry, const std::vector<int16_t>& voxels,
                                            const NiftiHeaderInfo& like, const std::string& description = "");
absl::StatusOr<NiftiImage> ReadNiftiFile(const std::string& path, const NiftiReadOptions& options = {});

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_NIFTI_H_
