// The volume report the gateway sends beside the SEG: a DICOM Enhanced SR
// following TID 1500 (Measurement Report), written with DCMTK's dcmsr/cmr
// templates. One TID 1411 volumetric ROI group per segment of the SEG:
// tracking identifier (the structure's name) and UID, the referenced
// segment, the source series, and its volume in cm3 (= ml) as the server
// measured it, with the algorithm that measured it (TID 4019: the model,
// its version and the weights' checksum). Patient and study are copied from a source instance, so the
// report files under the same study as the images and the SEG; only its
// header is parsed (LoadInstanceHeader), never its pixel data or any value
// too long to be an attribute of those modules.
//
// Thread-safe (no shared state).
#ifndef UPP_GATEWAY_REPORT_H_
#define UPP_GATEWAY_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace upp::gateway {

struct ReportInput {
  std::string_view seg;  // the SEG (Part 10 bytes) that the report refers to
  // One instance of the segmented series (a Part 10 file, from the sender):
  // read up to its pixel data, values over 64 KiB not copied.
  std::string source_path;
  int64_t max_source_bytes = int64_t{1} << 30;
  std::string source_series_uid;
  std::map<std::string, double> volume_ml_by_segment_label;  // every SEG segment's label must be here
  std::string manufacturer = "unetrpp-serve";
  std::string series_description = "UNETR++ segmentation";
  std::string software_version;
  // TID 4019 Algorithm Identification of each volume: the server's model
  // and the version that segmented (the ResultHeader's); not written when
  // the name is empty; clipped as the SEG clips it (imageio::DicomAlgorithmName).
  std::string algorithm_name;
  std::string algorithm_version;
  std::string algorithm_parameters;  // e.g. "weights_sha256=<hex>"; empty: none
};

// The SR as Part 10 bytes (explicit VR little endian). INVALID_ARGUMENT when
// the SEG has a segment without a volume, or either input is not DICOM.
absl::StatusOr<std::string> WriteVolumeReport(const ReportInput& input);

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_REPORT_H_
