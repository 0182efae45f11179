// DICOM SEG output: a label map computed on a DICOM series, as a binary
// Segmentation object (DCMTK dcmseg) that a PACS or viewer overlays on the
// source series.
//
// One segment per label that occurs (absent labels get none: a segment
// without frames is invalid) with its name and display colour, the algorithm's
// name and version; patient, study and frame of reference copied from a
// source instance; one frame per (segment, slice) that holds any voxel of the
// segment (empty frames are left out), each placed by its plane position and
// referencing its source image (derivation image sequence).
//
// Thread-safe (no shared state).
#ifndef UPP_IMAGEIO_DICOM_SEG_H_
#define UPP_IMAGEIO_DICOM_SEG_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "imageio/dicom.h"
#include "imageio/geometry.h"
#include "imageio/labels.h"

namespace upp::imageio {

// Each segment's Segmentation Algorithm Identification (family: Artificial
// Intelligence): the algorithm (the server's "UNETR++ <model>"), the
// model's version ("0" when empty: the attribute is required) and its
// parameters (e.g. the weights' SHA-256), so that a SEG names what made it.
struct SegAlgorithm {
  std::string name = "UNETR++";
  std::string version;
  std::string parameters;  // empty: none
};

// `name` as an Algorithm Name holds it (LO: at most 64 characters; a
// backslash would split the value, control characters are not allowed):
// "UNETR++ " and a model name of up to 64 characters would otherwise make the
// SEG fail. The SEG and the gateway's report (TID 4019) both name their
// algorithm through this, so that they name it alike.
std::string DicomAlgorithmName(std::string_view name);

// `geometry` and `info` are those ReadDicomSeries returned for the series;
// `labels` holds one label per voxel (x fastest); `source_instance` is one of
// the series' Part 10 files (the patient/study modules are copied from it).
absl::StatusOr<std::string> WriteDicomSeg(const Geometry& geometry, const std::vector<uint16_t>& labels,
                                          const DicomSeriesInfo& info, std::string_view source_instance,
                                          const std::vector<LabelInfo>& segments, const SegAlgorithm& algorithm);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DICOM_SEG_H_
