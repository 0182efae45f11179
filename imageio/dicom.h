// DICOM series input through DCMTK: a set of Part 10 files (as bytes)
// becomes one Volume in LPS geometry, plus what a DICOM SEG must reference.
//
// Every file must look like DICOM (LooksLikeDicom) before anything parses
// it. Instances of more than one patient (PatientID) or study
// (StudyInstanceUID) are refused (FAILED_PRECONDITION): a folder holding two
// patients must never come back as one patient's labels. Files are grouped
// by SeriesInstanceUID; the series is the one named in the options, else the
// only image series of an allowed modality; several such series are refused
// (FAILED_PRECONDITION, with their sizes) until the request names one. What
// was left out is counted by reason in DicomSeriesInfo::skipped. Slices are sorted by their position along the slice
// normal (ImageOrientationPatient row x column), not by InstanceNumber; one orientation and one slice size are
// required, and gaps, duplicates and uneven spacing are refused with the positions involved. Rescale slope/intercept,
// PixelRepresentation, BitsAllocated/BitsStored are honoured; compressed transfer syntaxes are decoded by DCMTK's JPEG,
// JPEG-LS and RLE codecs (deflate by dcmdata). Multi-frame (enhanced) images contribute one slice per frame, placed by
// their per-frame functional groups. JPEG 2000 (Part 1) is decoded with OpenJPEG; Part 2 multi-component is
// UNIMPLEMENTED, naming the transfer syntax.
//
// Messages never contain patient data (names, IDs, dates): only UIDs'
// positions in the input, tag names and numbers.
//
// Thread-safe: the codecs are registered once, process-wide.
#ifndef UPP_IMAGEIO_DICOM_H_
#define UPP_IMAGEIO_DICOM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "imageio/volume.h"

namespace upp::imageio {

struct DicomSeriesOptions {
  std::string series_instance_uid;                        // empty: the only allowed image series
  std::vector<std::string> modalities{"CT", "MR", "PT"};  // empty: any modality
  int64_t max_voxels = int64_t{1} << 30;
  // Called once the series' geometry is known and before any pixel is
  // decoded, with that geometry; a non-OK status ends the read with it
  // (admission before decoding, as for NIfTI).
  std::function<absl::Status(const Geometry&)> admit;
  // Called before DCMTK reads each file, with what its parse holds beyond
  // the file's bytes (which the caller holds): the heap of its elements and
  // the values it loads (DcmtkParseBytes), and, before that, for a file kept in memory whole (a
  // deflated one, DicomBytesHeldWhole), twice those bytes (DCMTK's copy, and
  // the structure check's while it walks). A non-OK status ends the read
  // with it.
  std::function<absl::Status(int64_t bytes)> reserve;
  // Largest allowed deviation of any slice gap from the median gap, relative.
  double spacing_tolerance = 0.01;
  // Asked before each file is parsed, each file's pixels are decoded and
  // each JPEG 2000 frame is decoded: true ends the read with CANCELLED (the
  // request it serves has ended; DCMTK and OpenJPEG cannot be interrupted,
  // so the read stops at the next of these points).
  std::function<bool()> cancelled;
};

// What a result written back as DICOM (SEG) must reference.
struct DicomSeriesInfo {
  std::string study_instance_uid, series_instance_uid, frame_of_reference_uid;
  std::string modality, sop_class_uid;
  std::vector<std::string> sop_instance_uids;  // one per slice, in z order
  std::vector<int> frame_numbers;              // 1-based frame of each slice in its instance
  std::vector<size_t> file_indices;            // the input file each slice came from
  std::string transfer_syntax;                 // of the first slice, as received
  int64_t instances_used = 0;                  // files of the series
  std::map<std::string, int64_t> skipped;      // files left out, by reason
};

struct DicomImage {
  Volume volume;
  DicomSeriesInfo info;
};

// True when `bytes` can be a DICOM file: a Part 10 file ("DICM" after the
// 128-byte preamble), or a bare data set (no Part 10 header, as some old
// archives hold) starting little endian with an element of the file meta
// (0002) or identifying (0008) group. Cheap: clients use it to skip the
// README.txt of a folder, as dcm2niix does.
bool LooksLikeDicom(std::string_view bytes);

absl::StatusOr<DicomImage> ReadDicomSeries(const std::vector<std::string_view>& files,
                                           const DicomSeriesOptions& options = {});

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_DICOM_H_
