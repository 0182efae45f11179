#include "gateway/series.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "imageio/dicom_lengths.h"
#include "imageio/file_util.h"

namespace upp::gateway {
namespace {

// Values longer than this stay in the file while it parses (DCMTK reads
// them when asked): the parse's heap is then at most this per element
// beyond DCMTK's own, whatever the instance holds besides its header.
constexpr Uint32 kLazyValueBytes = 256;
// An attribute the gateway reads (UIDs, codes, descriptions) longer than
// this is not a header but a way to make every reader load it.
constexpr Uint32 kMaxReadValueBytes = 64 * 1024;

std::string Text(DcmItem& item, const DcmTagKey& tag) {
  DcmElement* element = nullptr;
  OFString value;
  if (item.findAndGetElement(tag, element).bad() || element->getLength() > kMaxReadValueBytes ||
      element->getOFStringArray(value).bad())
    return "";
  return std::string(value.c_str());
}

}  // namespace

std::string OrientationName(const std::array<double, 6>& iop) {
  const double n[3] = {iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5],
                       iop[0] * iop[4] - iop[1] * iop[3]};
  const double norm = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
  if (!(norm > 1e-6)) return "oblique";
  const double cos_limit = std::cos(10.0 * M_PI / 180.0);
  const char* names[3] = {"sagittal", "coronal", "axial"};  // normal along x (L), y (P), z (S)
  for (int a = 0; a < 3; ++a)
    if (std::abs(n[a]) / norm >= cos_limit) return names[a];
  return "oblique";
}

absl::Status LoadInstanceHeader(const std::string& path, int64_t max_bytes, DcmFileFormat& file) {
  // Mapped, not read, and parsed lazily from the file: up to a GiB per
  // instance on every association thread would otherwise be heap.
  auto mapped = imageio::MappedFile::Open(path, max_bytes);
  if (!mapped.ok()) return mapped.status();
  const std::string_view bytes = (*mapped)->bytes();
  // A deflated instance is parsed whole (no lazy values): its inflated size
  // is what it costs, and what the limit applies to.
  auto held = imageio::DicomBytesHeldWhole(bytes);
  if (!held.ok()) return held.status();
  if (*held > max_bytes)
    return absl::ResourceExhaustedError(absl::StrCat("the instance inflates to more than ", max_bytes, " bytes"));
  // Lengths, tag order, element count and the values loaded before DCMTK
  // parses it: the gateway admits nothing, so kMaxDicomElements and
  // kMaxDicomLoadedValueBytes bound DCMTK's heap (about 150 MB + 64 MiB per
  // instance, one instance per association at a time).
  if (auto cost = imageio::CheckDicomStructure(bytes, kLazyValueBytes); !cost.ok()) return cost.status();
  // Nothing after the pixel data is a header.
  if (file.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange, kLazyValueBytes, ERM_autoDetect, DCM_PixelData)
          .bad())
    return absl::InvalidArgumentError("the instance is not a readable DICOM file");
  return absl::OkStatus();
}

absl::StatusOr<InstanceHeader> ReadInstanceHeader(const std::string& path, int64_t max_bytes) {
  DcmFileFormat file;
  if (auto s = LoadInstanceHeader(path, max_bytes, file); !s.ok()) return s;
  DcmDataset& d = *file.getDataset();
  InstanceHeader h;
  h.sop_class_uid = Text(d, DCM_SOPClassUID);
  h.sop_instance_uid = Text(d, DCM_SOPInstanceUID);
  h.series_instance_uid = Text(d, DCM_SeriesInstanceUID);
  h.study_instance_uid = Text(d, DCM_StudyInstanceUID);
  if (h.sop_instance_uid.empty() || h.series_instance_uid.empty() || h.study_instance_uid.empty())
    return absl::InvalidArgumentError("an instance lacks its SOP, series or study instance UID");
  h.modality = Text(d, DCM_Modality);
  h.body_part = Text(d, DCM_BodyPartExamined);
  h.series_description = Text(d, DCM_SeriesDescription);
  h.protocol_name = Text(d, DCM_ProtocolName);
  std::array<double, 6> iop;
  bool all = true;
  for (unsigned long i = 0; i < 6 && all; ++i) all = d.findAndGetFloat64(DCM_ImageOrientationPatient, iop[i], i).good();
  if (all) h.orientation = iop;
  if (DcmMetaInfo* meta = file.getMetaInfo()) h.transfer_syntax_uid = Text(*meta, DCM_TransferSyntaxUID);
  return h;
}

absl::StatusOr<SeriesSummary> SummarizeSeries(const std::string& dir, const SeriesLimits& limits) {
  auto files = imageio::ListFiles(dir);
  if (!files.ok()) return files.status();
  if (files->empty()) return absl::InvalidArgumentError("the series has no instances");
  if (static_cast<int64_t>(files->size()) > limits.max_instances)
    return absl::ResourceExhaustedError(
        absl::StrCat("the series has ", files->size(), " instances, over the limit of ", limits.max_instances));
  SeriesSummary summary;
  for (const auto& f : *files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    if (ec) return absl::NotFoundError("a spooled instance cannot be read");
    summary.bytes += static_cast<int64_t>(size);  // at most max_instances x 1 GiB: no overflow
  }
  if (summary.bytes > limits.max_bytes)
    return absl::ResourceExhaustedError(
        absl::StrCat("the series has ", summary.bytes, " bytes, over the limit of ", limits.max_bytes));
  for (size_t i = 0; i < files->size(); ++i) {
    auto h = ReadInstanceHeader((*files)[i], limits.max_instance_bytes);
    if (!h.ok()) return absl::InvalidArgumentError(absl::StrCat("instance ", i + 1, ": ", h.status().message()));
    if (i == 0) {
      summary.study_instance_uid = h->study_instance_uid;
      summary.series_instance_uid = h->series_instance_uid;
      summary.modality = h->modality;
      summary.body_part = h->body_part;
      summary.series_description = h->series_description;
      summary.protocol_name = h->protocol_name;
      if (h->orientation) summary.orientation = OrientationName(*h->orientation);
    } else if (h->series_instance_uid != summary.series_instance_uid) {
      return absl::InvalidArgumentError(absl::StrCat("instance ", i + 1, " belongs to another series"));
    }
  }
  summary.files = *std::move(files);
  return summary;
}

}  // namespace upp::gateway
