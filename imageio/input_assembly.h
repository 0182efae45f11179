// The inputs of one segmentation request assembled into one multi-channel
// volume: a DICOM series from any number of instances, one NIfTI (3-D, or
// 4-D holding the channels), or one NIfTI per channel sharing one geometry.
// Knows nothing of gRPC: the server's reactor collects the bytes, this
// decodes them (tests and the request fuzzer call it directly).
//
// Thread-safe (no shared state); the admission callback is called on the
// calling thread, before anything of the volume's size is allocated.
#ifndef UPP_IMAGEIO_INPUT_ASSEMBLY_H_
#define UPP_IMAGEIO_INPUT_ASSEMBLY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "imageio/dicom.h"
#include "imageio/geometry.h"
#include "imageio/nifti.h"
#include "imageio/volume.h"

namespace upp::imageio {

enum class InputFormat { kNifti, kDicom };

struct AssemblyOptions {
  InputFormat format = InputFormat::kNifti;
  int channels = 1;                           // what the model takes
  std::vector<std::string> modalities{"CT"};  // DICOM: allowed series modalities
  std::string series_instance_uid;            // DICOM: the series to read; empty: the only one
  int64_t max_voxels = int64_t{1} << 30;      // per input volume
  // Called before each file's voxels are decoded, with the volume's geometry
  // and the bytes decoding that file allocates; a non-OK status ends the
  // assembly with it.
  std::function<absl::Status(const Geometry&, int64_t read_bytes)> admit;
  // Called before a reader holds memory that no geometry accounts for (a
  // deflated DICOM file, read whole: DicomSeriesOptions::reserve), with its
  // bytes; a non-OK status ends the assembly with it.
  std::function<absl::Status(int64_t bytes)> reserve;
  // Asked between DICOM files and frames (DicomSeriesOptions::cancelled)
  // and between chunks of NIfTI inflating and converting
  // (NiftiReadOptions::cancelled); true ends the assembly with CANCELLED.
  std::function<bool()> cancelled;
};

// What the result needs to know of the input, beyond its voxels: one value
// from decoding to encoding (the NIfTI result's conventions, the DICOM
// series a SEG refers to, what the result's InputSummary reports).
struct InputDescription {
  NiftiHeaderInfo nifti_header;          // the conventions a NIfTI result follows
  std::optional<DicomSeriesInfo> dicom;  // the series, for a DICOM SEG result
  std::string dicom_source_instance;     // one instance of that series
  int64_t files = 0;                     // input files received
};

struct AssembledInput {
  Volume volume;  // channels x voxels
  InputDescription description;
};

// `inputs`: input index -> file bytes (NIfTI: the index is the channel;
// DICOM: instances in any order). Consumed: each file's bytes are released
// once decoded.
absl::StatusOr<AssembledInput> AssembleInputs(std::map<uint32_t, std::string>& inputs, const AssemblyOptions& options);

// Size equal; spacing, origin and direction equal within what rounding in
// file headers leaves (1e-4 relative spacing, 1e-3 mm, 1e-4).
bool SameGeometry(const Geometry& a, const Geometry& b);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_INPUT_ASSEMBLY_H_
