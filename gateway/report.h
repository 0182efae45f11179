// The volume report the gateway sends beside the SEG: a DICOM Enhanced SR
// following TID 1500 (Measurement Report), written with DCMTK's dcmsr/cmr
// templates. One TID 1411 volumetric ROI group per segment of the SEG:
// tracking identifier (the structure's name) and UID, the referenced
// segment, the source series, and its volume in cm3 (= ml) as the server
// measured it. Patient and study are copied from a source instance, so the
// report files under the same study as the images and the SEG.
//
// Thread-safe (no shared state).
#ifndef UPP_GATEWAY_REPORT_H_
#define UPP_GATEWAY_REPORT_H_

#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace upp::gateway {

struct ReportInput {
  std::string_view seg;              // the SEG (Part 10 bytes) that the report refers to
  std::string_view source_instance;  // one instance of the segmented series (Part 10 bytes)
  std::string source_series_uid;
  std::map<std::string, double> volume_ml_by_segment_label;  // every SEG segment's label must be here
  std::string manufacturer = "unetrpp-serve";
  std::string series_description = "UNETR++ segmentation";
  std::string software_version;
};

// The SR as Part 10 bytes (explicit VR little endian). INVALID_ARGUMENT when
// the SEG has a segment without a volume, or either input is not DICOM.
absl::StatusOr<std::string> WriteVolumeReport(const ReportInput& input);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_REPORT_H_
