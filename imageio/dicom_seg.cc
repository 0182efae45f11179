#include "imageio/dicom_seg.h"

// DCMTK's configuration header must come first.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmfg/fgderimg.h>
#include <dcmtk/dcmfg/fgfracon.h>
#include <dcmtk/dcmfg/fgpixmsr.h>
#include <dcmtk/dcmfg/fgplanor.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmiod/cielabutil.h>
#include <dcmtk/dcmiod/iodreferences.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "imageio/dcmtk_io.h"

namespace upp::imageio {
namespace {

absl::Status Dcmtk(const OFCondition& c, const char* what) {
  if (c.good()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("DICOM SEG: ", what, ": ", c.text()));
}

std::string Num(double v) { return absl::StrFormat("%.6f", v); }

// The SEG document: equipment, content identification, the source's
// patient, study and frame of reference, a series after the source's.
absl::StatusOr<std::unique_ptr<DcmSegmentation>> CreateSegmentation(DcmFileFormat& source, int64_t nx, int64_t ny,
                                                                    const SegAlgorithm& algorithm) {
  IODGeneralEquipmentModule::EquipmentInfo equipment("unetrpp-serve", "1", "unetrpp-serve",
                                                     algorithm.version.empty() ? "0" : algorithm.version);
  ContentIdentificationMacro ident("1", "SEGMENTATION", "UNETR++ segmentation", "Unetrpp^Serve");
  DcmSegmentation* raw = nullptr;
  if (auto s = Dcmtk(DcmSegmentation::createBinarySegmentation(raw, static_cast<Uint16>(ny), static_cast<Uint16>(nx),
                                                               equipment, ident),
                     "creating the segmentation");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<DcmSegmentation> seg(raw);
  if (auto s = Dcmtk(seg->importFromSourceImage(*source.getDataset(), OFTrue),
                     "copying patient, study and frame of reference");
      !s.ok()) {
    return s;
  }

  // Series: numbered after the source series (+1000), described.
  Sint32 source_series_number = 0;
  source.getDataset()->findAndGetSint32(DCM_SeriesNumber, source_series_number);
  seg->getSegmentationSeriesModule().setSeriesNumber(
      std::to_string(std::max<Sint32>(0, source_series_number) + 1000).c_str());
  seg->getSeries().setSeriesDescription("UNETR++ segmentation");

  return seg;
}

// Pixel measures, orientation and the dimension index, the same for all frames.
absl::Status AddSharedGroups(DcmSegmentation& seg_ref, const Geometry& geometry) {
  DcmSegmentation* seg = &seg_ref;
  FGPixelMeasures measures;
  measures.setPixelSpacing(OFString((Num(geometry.spacing[1]) + "\\" + Num(geometry.spacing[0])).c_str()));
  measures.setSliceThickness(Num(geometry.spacing[2]).c_str());
  measures.setSpacingBetweenSlices(Num(geometry.spacing[2]).c_str());
  if (auto s = Dcmtk(seg->addForAllFrames(measures), "pixel measures"); !s.ok()) return s;
  const auto& d = geometry.direction;
  std::unique_ptr<FGPlaneOrientationPatient> orientation(
      FGPlaneOrientationPatient::createMinimal(Num(d[0]).c_str(), Num(d[3]).c_str(), Num(d[6]).c_str(),
                                               Num(d[1]).c_str(), Num(d[4]).c_str(), Num(d[7]).c_str()));
  if (!orientation) return absl::InternalError("DICOM SEG: plane orientation");
  if (auto s = Dcmtk(seg->addForAllFrames(*orientation), "plane orientation"); !s.ok()) return s;

  char dim_uid[100];
  dcmGenerateUniqueIdentifier(dim_uid, SITE_INSTANCE_UID_ROOT);
  auto& dims = seg->getDimensions();
  dims.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid, DCM_SegmentIdentificationSequence,
                         "ReferencedSegmentNumber");
  dims.addDimensionIndex(DCM_ImagePositionPatient, dim_uid, DCM_PlanePositionSequence, "ImagePositionPatient");

  return absl::OkStatus();
}

// One segment's description: label, anatomy code, algorithm, colour.
absl::StatusOr<Uint16> AddSegmentDescription(DcmSegmentation& seg, const LabelInfo& description,
                                             const SegAlgorithm& algorithm) {
  const std::string algorithm_name = DicomAlgorithmName(algorithm.name);
  DcmSegment* segment = nullptr;
  if (auto s = Dcmtk(DcmSegment::create(segment, description.name.c_str(),
                                        CodeSequenceMacro("91723000", "SCT", "Anatomical Structure"),
                                        CodeSequenceMacro("91723000", "SCT", "Anatomical Structure"),
                                        DcmSegTypes::SAT_AUTOMATIC, algorithm_name.c_str()),
                     "creating a segment");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<DcmSegment> owned(segment);  // until the segmentation takes it
  auto& algo = segment->getSegmentationAlgorithmIdentification();
  algo.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence");
  // Name and version are type 1 in the identification sequence.
  if (auto s = Dcmtk(algo.setAlgorithmName(algorithm_name.c_str()), "algorithm name"); !s.ok()) return s;
  if (auto s = Dcmtk(algo.setAlgorithmVersion(algorithm.version.empty() ? "0" : algorithm.version.c_str()),
                     "algorithm version");
      !s.ok())
    return s;
  if (!algorithm.parameters.empty())
    if (auto s = Dcmtk(algo.setAlgorithmParameters(algorithm.parameters.c_str()), "algorithm parameters"); !s.ok())
      return s;
  double l, a, b;
  IODCIELabUtil::rgb2DicomLab(l, a, b, description.rgb[0] / 255.0, description.rgb[1] / 255.0,
                              description.rgb[2] / 255.0);
  segment->setRecommendedDisplayCIELabValue(static_cast<Uint16>(std::lround(l)), static_cast<Uint16>(std::lround(a)),
                                            static_cast<Uint16>(std::lround(b)));
  Uint16 number = 0;
  if (auto s = Dcmtk(seg.addSegment(segment, number), "adding a segment"); !s.ok()) return s;
  owned.release();
  return number;
}

// The segment's frames: one per slice where the label occurs, on the source
// slice's position, referencing the source instance (and frame).
absl::Status AddSegmentFrames(DcmSegmentation& seg, const Geometry& geometry, const std::vector<uint16_t>& labels,
                              const DicomSeriesInfo& info, const LabelInfo& description, Uint16 number) {
  const int64_t nx = geometry.size[0], ny = geometry.size[1], nz = geometry.size[2];
  // Slices that are frames of one multi-frame instance are referenced by frame number.
  const bool multi_frame_source =
      info.frame_numbers.size() == static_cast<size_t>(nz) &&
      std::any_of(info.frame_numbers.begin(), info.frame_numbers.end(), [](int f) { return f > 1; });
  std::vector<uint8_t> mask(static_cast<size_t>(nx * ny));
  for (int64_t k = 0; k < nz; ++k) {
    bool any = false;
    const uint16_t* slice = labels.data() + k * nx * ny;
    for (int64_t p = 0; p < nx * ny; ++p) {
      mask[p] = slice[p] == description.value ? 1 : 0;
      any |= mask[p] != 0;
    }
    if (!any) continue;  // empty frames are left out
    const auto pos = geometry.IndexToPhysical({0, 0, static_cast<double>(k)});
    std::unique_ptr<FGPlanePosPatient> position(
        FGPlanePosPatient::createMinimal(Num(pos[0]).c_str(), Num(pos[1]).c_str(), Num(pos[2]).c_str()));
    FGFrameContent content;
    content.setDimensionIndexValues(number, 0);
    content.setDimensionIndexValues(static_cast<Uint32>(k + 1), 1);
    OFVector<ImageSOPInstanceReferenceMacro> refs(1);
    refs[0].setReferencedSOPClassUID(info.sop_class_uid.c_str());
    refs[0].setReferencedSOPInstanceUID(info.sop_instance_uids[k].c_str());
    if (multi_frame_source) {
      refs[0].addReferencedFrameNumber(static_cast<Uint16>(info.frame_numbers[k]));
    }
    std::unique_ptr<FGDerivationImage> derivation(FGDerivationImage::createMinimal(
        refs, "Segmentation", CodeSequenceMacro("113076", "DCM", "Segmentation"),
        CodeSequenceMacro("121322", "DCM", "Source image for image processing operation")));
    if (!position || !derivation) return absl::InternalError("DICOM SEG: frame functional groups");
    OFVector<FGBase*> groups;
    groups.push_back(position.get());
    groups.push_back(&content);
    groups.push_back(derivation.get());
    if (auto s = Dcmtk(seg.addFrame(mask.data(), number, groups), "adding a frame"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// Common Instance Reference: the source series and its instances.
void AddReferences(DcmSegmentation& seg, DcmFileFormat& source, const DicomSeriesInfo& info, int64_t nz) {
  IODReferences references;
  OFString patient_id;
  source.getDataset()->findAndGetOFString(DCM_PatientID, patient_id);
  for (int64_t k = 0; k < nz; ++k) {
    // IODReferences takes ownership of what add() accepts.
    auto* ref = new IODImageReference(patient_id, info.study_instance_uid.c_str(), info.series_instance_uid.c_str(),
                                      info.sop_instance_uids[k].c_str(), info.sop_class_uid.c_str());
    if (!references.add(ref)) delete ref;  // duplicates (frames of one instance) are refused
  }
  seg.getCommonInstanceReference().addReferences(references, info.study_instance_uid.c_str());
}

}  // namespace

std::string DicomAlgorithmName(std::string_view name) {
  constexpr size_t kMaxLongString = 64;
  std::string out;
  for (const char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\\' || u < 0x20 || u == 0x7f) continue;
    out.push_back(c);
  }
  if (out.size() <= kMaxLongString) return out;
  size_t cut = kMaxLongString;
  // Not inside a UTF-8 sequence: back to the start of the character cut.
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  out.resize(cut);
  return out;
}

absl::StatusOr<std::string> WriteDicomSeg(const Geometry& geometry, const std::vector<uint16_t>& labels,
                                          const DicomSeriesInfo& info, std::string_view source_instance,
                                          const std::vector<LabelInfo>& segments, const SegAlgorithm& algorithm) {
  if (auto s = geometry.Validate(); !s.ok()) return s;
  const int64_t nx = geometry.size[0], ny = geometry.size[1], nz = geometry.size[2];
  if (static_cast<int64_t>(labels.size()) != nx * ny * nz) {
    return absl::InvalidArgumentError("DICOM SEG: label map size does not match the geometry");
  }
  if (static_cast<int64_t>(info.sop_instance_uids.size()) != nz || nx > 65535 || ny > 65535) {
    return absl::InvalidArgumentError("DICOM SEG: the series information does not match the geometry");
  }
  if (segments.empty()) return absl::InvalidArgumentError("DICOM SEG: no segments");
  // DCMTK's log lines can quote element values (patient data): keep it quiet.
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  // The source instance was parsed once by ReadDicomSeries (its elements
  // reserved there); ParseDicom checks its structure again.
  DcmFileFormat source;
  if (auto s = ParseDicom(source_instance, source); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("DICOM SEG: reading the source instance: ", s.message()));
  auto seg = CreateSegmentation(source, nx, ny, algorithm);
  if (!seg.ok()) return seg.status();
  if (auto s = AddSharedGroups(**seg, geometry); !s.ok()) return s;
  // Labels that occur: a segment without any frame makes an invalid SEG, so
  // absent labels get no segment.
  std::vector<bool> present(65536, false);
  for (uint16_t l : labels) present[l] = true;
  for (const auto& description : segments) {
    if (description.value < 1 || description.value > 65535 || !present[description.value]) continue;
    auto number = AddSegmentDescription(**seg, description, algorithm);
    if (!number.ok()) return number.status();
    if (auto s = AddSegmentFrames(**seg, geometry, labels, info, description, *number); !s.ok()) return s;
  }
  AddReferences(**seg, source, info, nz);
  DcmFileFormat file;
  if (auto s = Dcmtk((*seg)->writeDataset(*file.getDataset()), "writing"); !s.ok()) return s;
  return SerializeDicom(file);
}

}  // namespace upp::imageio
