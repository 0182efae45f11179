#include "gateway/report.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmiod/modhelp.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/series.h"
#include "imageio/dcmtk_io.h"
#include "imageio/dicom_seg.h"

namespace upp::gateway {
namespace {

absl::Status Check(const OFCondition& cond, const char* what) {
  if (cond.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("volume report: ", what, ": ", cond.text()));
}

struct Segment {
  Uint16 number = 0;
  std::string label;
};

absl::StatusOr<std::vector<Segment>> SegmentsOf(DcmDataset& seg) {
  std::vector<Segment> segments;
  DcmItem* item = nullptr;
  for (unsigned long i = 0; seg.findAndGetSequenceItem(DCM_SegmentSequence, item, static_cast<int>(i)).good(); ++i) {
    Segment s;
    OFString label;
    if (item->findAndGetUint16(DCM_SegmentNumber, s.number).bad() ||
        item->findAndGetOFString(DCM_SegmentLabel, label).bad())
      return absl::InvalidArgumentError("a SEG segment lacks its number or label");
    s.label = label.c_str();
    segments.push_back(s);
  }
  if (segments.empty()) return absl::InvalidArgumentError("the SEG has no segments");
  return segments;
}

// ParseDicom checks the structure (lengths, tag order, element count)
// before DCMTK sees the bytes.
absl::Status Parse(std::string_view bytes, DcmFileFormat& file, const char* what) {
  if (auto s = imageio::ParseDicom(bytes, file); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  return absl::OkStatus();
}

// Longer values of the source are not copied into the report: no patient
// or study attribute is this long (LT, the longest text, holds 10240
// characters), and copying one would load it from the file.
constexpr Uint32 kMaxCopiedValueBytes = 64 * 1024;

// The source's header (up to its pixel data, long values left in the file),
// without the elements too long to copy, sequences included.
absl::Status LoadSource(const ReportInput& input, DcmFileFormat& file) {
  if (auto s = LoadInstanceHeader(input.source_path, input.max_source_bytes, file); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the source instance: ", s.message()));
  DcmDataset& d = *file.getDataset();
  const E_TransferSyntax xfer = d.getOriginalXfer();
  for (unsigned long i = d.card(); i-- > 0;) {
    DcmElement* e = d.getElement(i);
    if (e != nullptr && e->getLength(xfer) > kMaxCopiedValueBytes) delete d.remove(i);
  }
  return absl::OkStatus();
}

// TID 1500 rows 1-6 and the image library (empty: the measurements refer
// to the SEG, not to single images).
absl::Status StartReport(TID1500_MeasurementReport& report, const ReportInput& input) {
  char uid[100];
  if (auto s =
          Check(report.getObservationContext().addDeviceObserver(
                    dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT), "UNETR++", input.manufacturer.c_str()),
                "device observer");
      !s.ok())
    return s;
  if (auto s = Check(report.getImageLibrary().createNewImageLibrary(), "image library"); !s.ok()) return s;
  return Check(report.addProcedureReported(DSRCodedEntryValue("363679005", "SCT", "Imaging procedure")),
               "procedure reported");
}

absl::Status AddSegmentGroup(TID1500_MeasurementReport& report, DcmDataset& seg, const Segment& segment,
                             double volume_ml, const ReportInput& input) {
  if (auto s = Check(report.addVolumetricROIMeasurements(), "measurement group"); !s.ok()) return s;
  CMR_TID1411_in_TID1500& group = report.getVolumetricROIMeasurements();
  char uid[100];
  if (auto s = Check(group.setTrackingIdentifier(segment.label.c_str()), "tracking identifier"); !s.ok()) return s;
  if (auto s = Check(group.setTrackingUniqueIdentifier(dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT)),
                     "tracking UID");
      !s.ok())
    return s;
  if (auto s = Check(group.setReferencedSegment(seg, segment.number, OFFalse), "referenced segment"); !s.ok()) return s;
  if (auto s = Check(group.setSourceSeriesForSegmentation(input.source_series_uid.c_str()), "source series"); !s.ok())
    return s;
  if (auto s = Check(group.setFinding(DSRCodedEntryValue("91723000", "SCT", "Anatomical Structure")), "finding");
      !s.ok())
    return s;
  const std::string value = absl::StrFormat("%.3f", volume_ml);  // cm3 = ml; 1 mm3 resolution
  if (auto s = Check(group.addMeasurement(CMR_CID7469::Volume, CMR_TID1411_in_TID1500::MeasurementValue(
                                                                   value.c_str(), CMR_CID7181::CubicCentimeter)),
                     "volume");
      !s.ok())
    return s;
  if (input.algorithm_name.empty()) return absl::OkStatus();
  auto& measurement = group.getMeasurement();
  const std::string algorithm_name = imageio::DicomAlgorithmName(input.algorithm_name);  // as the SEG names it
  if (auto s =
          Check(measurement.setAlgorithmIdentification(
                    algorithm_name.c_str(), input.algorithm_version.empty() ? "0" : input.algorithm_version.c_str()),
                "algorithm identification");
      !s.ok())
    return s;
  if (input.algorithm_parameters.empty()) return absl::OkStatus();
  return Check(measurement.getAlgorithmIdentification().addParameter(input.algorithm_parameters.c_str()),
               "algorithm parameters");
}

// Document-level attributes, the SEG as evidence, patient and study from
// the source.
absl::StatusOr<std::string> Finish(TID1500_MeasurementReport& report, DcmDataset& seg, DcmDataset& source,
                                   const ReportInput& input) {
  if (!report.isValid()) return absl::InternalError("volume report: the measurement report is incomplete");
  DSRDocument doc;
  if (auto s = Check(doc.setTreeFromRootTemplate(report, OFTrue), "document tree"); !s.ok()) return s;
  OFString study_uid;
  source.findAndGetOFString(DCM_StudyInstanceUID, study_uid);
  if (auto s = Check(doc.createNewSeriesInStudy(study_uid), "series"); !s.ok()) return s;
  doc.setManufacturer(input.manufacturer.c_str());
  doc.setSeriesDescription(input.series_description.c_str());
  if (!input.software_version.empty()) doc.setSoftwareVersions(input.software_version.c_str());
  if (auto s = Check(doc.getCurrentRequestedProcedureEvidence().addItem(seg), "evidence"); !s.ok()) return s;
  doc.completeDocument();
  DcmFileFormat file;
  if (auto s = Check(doc.write(*file.getDataset()), "writing"); !s.ok()) return s;
  DcmModuleHelpers::copyPatientModule(source, *file.getDataset());
  DcmModuleHelpers::copyPatientStudyModule(source, *file.getDataset());
  DcmModuleHelpers::copyGeneralStudyModule(source, *file.getDataset());
  return imageio::SerializeDicom(file);
}

}  // namespace

absl::StatusOr<std::string> WriteVolumeReport(const ReportInput& input) {
  DcmFileFormat seg_file, source_file;
  if (auto s = Parse(input.seg, seg_file, "the SEG"); !s.ok()) return s;
  if (auto s = LoadSource(input, source_file); !s.ok()) return s;
  DcmDataset& seg = *seg_file.getDataset();
  auto segments = SegmentsOf(seg);
  if (!segments.ok()) return segments.status();
  TID1500_MeasurementReport report(CMR_CID7021::ImagingMeasurementReport);
  if (auto s = StartReport(report, input); !s.ok()) return s;
  for (const auto& segment : *segments) {
    const auto volume = input.volume_ml_by_segment_label.find(segment.label);
    if (volume == input.volume_ml_by_segment_label.end())
      return absl::InvalidArgumentError(absl::StrCat("no volume for SEG segment ", segment.number));
    if (auto s = AddSegmentGroup(report, seg, segment, volume->second, input); !s.ok()) return s;
  }
  return Finish(report, seg, *source_file.getDataset(), input);
}

}  // namespace upp::gateway
