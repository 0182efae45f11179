// What the gateway knows of a received series before sending it anywhere:
// each instance's identifying and routing attributes, read from the spooled
// file (lengths checked before DCMTK parses it; pixel data not decoded), and
// the series as a whole (counts, bytes, orientation).
//
// Thread-safe (no shared state). Holds UIDs and descriptive attributes
// that are for routing only: none of it is logged except counts and the
// orientation.
#ifndef UPP_GATEWAY_SERIES_H_
#define UPP_GATEWAY_SERIES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

class DcmFileFormat;

namespace upp::gateway {

struct InstanceHeader {
  std::string sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid;
  std::string modality, body_part, series_description, protocol_name;
  std::optional<std::array<double, 6>> orientation;  // ImageOrientationPatient
  std::string transfer_syntax_uid;                   // of the file meta information ("" when absent)
};

struct SeriesSummary {
  std::string study_instance_uid, series_instance_uid;
  std::string modality, body_part, series_description, protocol_name;  // of the first instance
  std::string orientation;         // "axial", "coronal", "sagittal", "oblique" or "" (none given)
  std::vector<std::string> files;  // sorted by name
  int64_t bytes = 0;
};

struct SeriesLimits {
  int64_t max_instances = 4096;  // the service's default limits.max_input_files
  int64_t max_bytes = int64_t{2} << 30;
  int64_t max_instance_bytes = int64_t{1} << 30;
};

// One Part 10 file parsed up to its pixel data, after the structure check
// (imageio/dicom_lengths.h), with values over 256 bytes left in the file
// until they are read: its heap is bounded by the element count, not by
// the file's size. INVALID_ARGUMENT when it is not DICOM or does not pass.
absl::Status LoadInstanceHeader(const std::string& path, int64_t max_bytes, DcmFileFormat& file);

// The header of one Part 10 file (LoadInstanceHeader). INVALID_ARGUMENT when it is not DICOM,
// its lengths do not fit, or it lacks a SOP/series/study UID.
absl::StatusOr<InstanceHeader> ReadInstanceHeader(const std::string& path, int64_t max_bytes);

// Every file in `dir`: sizes checked against `limits` before any is read,
// then each header; all instances must share the series UID.
absl::StatusOr<SeriesSummary> SummarizeSeries(const std::string& dir, const SeriesLimits& limits);

// The plane of an image whose rows and columns run along `iop` (row x, y,
// z, column x, y, z): the axis its normal is within 10 degrees of, else
// "oblique".
std::string OrientationName(const std::array<double, 6>& iop);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_SERIES_H_
