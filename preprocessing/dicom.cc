#include "preprocessing/dicom.h"

// DCMTK's configuration header must come first.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace upp::preprocessing {
namespace {

void RegisterCodecsOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK's warnings can quote element values; keep its logger quiet.
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

// The bytes of one DICOM file as an anonymous in-memory file. DCMTK parses a
// file stream lazily: values longer than kLazyValueBytes are not read while
// parsing but loaded on first use, from the file. A buffer stream has no such
// mode and allocates whatever length an element claims (a 100-byte input
// claiming a 4 GB element made it allocate 4 GB: found by the fuzzer).
class MemFile {
 public:
  static absl::StatusOr<std::unique_ptr<MemFile>> Create(std::string_view bytes) {
    int fd = memfd_create("upp-dicom", MFD_CLOEXEC);
    if (fd < 0) return absl::InternalError("memfd_create failed");
    auto f = std::unique_ptr<MemFile>(new MemFile(fd, bytes.size()));
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) return absl::InternalError("writing the in-memory DICOM file failed");
      done += static_cast<size_t>(n);
    }
    return f;
  }
  ~MemFile() { ::close(fd_); }
  std::string Path() const { return "/proc/self/fd/" + std::to_string(fd_); }
  size_t size() const { return size_; }

 private:
  MemFile(int fd, size_t size) : fd_(fd), size_(size) {}
  int fd_;
  size_t size_;
};

constexpr Uint32 kLazyValueBytes = 64 * 1024;

struct Slice {
  size_t file_index = 0;
  std::unique_ptr<MemFile> memory;
  std::unique_ptr<DcmFileFormat> file;
  std::string series_uid, sop_uid, modality;
  std::array<double, 3> position{};
  std::array<double, 6> orientation{};
  std::array<double, 2> pixel_spacing{};  // row spacing (y), column spacing (x)
  uint16_t rows = 0, cols = 0;
  double z = 0;  // position along the normal
};

std::string Str(DcmDataset* ds, const DcmTagKey& tag) {
  OFString s;
  return ds->findAndGetOFStringArray(tag, s).good() ? std::string(s.c_str()) : std::string();
}

template <size_t N>
bool Floats(DcmDataset* ds, const DcmTagKey& tag, std::array<double, N>* out) {
  for (size_t i = 0; i < N; ++i) {
    Float64 v;
    if (ds->findAndGetFloat64(tag, v, static_cast<unsigned long>(i)).bad() || !std::isfinite(v)) {
      return false;
    }
    (*out)[i] = v;
  }
  return true;
}

std::string TagName(const DcmTagKey& tag) {
  return DcmTag(tag).getTagName();
}

absl::Status Refuse(size_t index, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("DICOM file #", index + 1, ": ", what));
}

}  // namespace

absl::StatusOr<DicomImage> ReadDicomSeries(const std::vector<std::string_view>& files,
                                           const DicomSeriesOptions& options) {
  RegisterCodecsOnce();
  if (files.empty()) return absl::InvalidArgumentError("no DICOM files were given");
  std::map<std::string, std::vector<Slice>> by_series;
  for (size_t i = 0; i < files.size(); ++i) {
    auto memory = MemFile::Create(files[i]);
    if (!memory.ok()) return memory.status();
    auto file = std::make_unique<DcmFileFormat>();
    OFCondition cond = file->loadFile((*memory)->Path().c_str(), EXS_Unknown, EGL_noChange,
                                      kLazyValueBytes, ERM_autoDetect);
    if (cond.bad()) return Refuse(i, absl::StrCat("not a readable DICOM file (", cond.text(), ")"));
    DcmDataset* ds = file->getDataset();
    if (!ds->tagExists(DCM_PixelData)) continue;  // SR, RT plan, ...: not an image
    Slice s;
    s.file_index = i;
    s.series_uid = Str(ds, DCM_SeriesInstanceUID);
    s.sop_uid = Str(ds, DCM_SOPInstanceUID);
    s.modality = Str(ds, DCM_Modality);
    if (s.series_uid.empty()) return Refuse(i, "image without a SeriesInstanceUID");
    s.file = std::move(file);
    s.memory = std::move(*memory);
    by_series[s.series_uid].push_back(std::move(s));
  }
  if (by_series.empty()) return absl::InvalidArgumentError("none of the DICOM files is an image");

  std::vector<Slice>* chosen = nullptr;
  if (!options.series_instance_uid.empty()) {
    auto it = by_series.find(options.series_instance_uid);
    if (it == by_series.end()) {
      return absl::InvalidArgumentError("the requested SeriesInstanceUID is not among the images");
    }
    chosen = &it->second;
  } else {
    for (auto& [uid, slices] : by_series) {
      const bool allowed = options.modalities.empty() ||
                           std::find(options.modalities.begin(), options.modalities.end(),
                                     slices.front().modality) != options.modalities.end();
      if (allowed && (chosen == nullptr || slices.size() > chosen->size())) chosen = &slices;
    }
    if (chosen == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no image series of an allowed modality (", absl::StrJoin(options.modalities, ", "),
          ") among ", by_series.size(), " series"));
    }
  }
  auto& slices = *chosen;

  // Geometry of every slice.
  for (auto& s : slices) {
    DcmDataset* ds = s.file->getDataset();
    Sint32 frames = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).good() && frames > 1) {
      return absl::UnimplementedError("multi-frame (enhanced) DICOM images are not supported yet");
    }
    if (ds->findAndGetUint16(DCM_Rows, s.rows).bad() || ds->findAndGetUint16(DCM_Columns, s.cols).bad() ||
        s.rows == 0 || s.cols == 0) {
      return Refuse(s.file_index, "missing or zero Rows/Columns");
    }
    if (!Floats(ds, DCM_ImagePositionPatient, &s.position)) {
      return Refuse(s.file_index, "missing or invalid ImagePositionPatient");
    }
    if (!Floats(ds, DCM_ImageOrientationPatient, &s.orientation)) {
      return Refuse(s.file_index, "missing or invalid ImageOrientationPatient");
    }
    if (!Floats(ds, DCM_PixelSpacing, &s.pixel_spacing)) {
      return Refuse(s.file_index, "missing or invalid PixelSpacing");
    }
  }
  const Slice& first = slices.front();
  const auto& o = first.orientation;
  const std::array<double, 3> row{o[0], o[1], o[2]}, col{o[3], o[4], o[5]};
  const std::array<double, 3> normal{row[1] * col[2] - row[2] * col[1], row[2] * col[0] - row[0] * col[2],
                                     row[0] * col[1] - row[1] * col[0]};
  for (auto& s : slices) {
    for (int k = 0; k < 6; ++k) {
      if (std::abs(s.orientation[k] - o[k]) > 1e-4) {
        return absl::InvalidArgumentError("the series mixes image orientations");
      }
    }
    if (s.rows != first.rows || s.cols != first.cols) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the series mixes slice sizes (%dx%d and %dx%d)", first.cols, first.rows, s.cols, s.rows));
    }
    if (std::abs(s.pixel_spacing[0] - first.pixel_spacing[0]) > 1e-4 ||
        std::abs(s.pixel_spacing[1] - first.pixel_spacing[1]) > 1e-4) {
      return absl::InvalidArgumentError("the series mixes pixel spacings");
    }
    s.z = s.position[0] * normal[0] + s.position[1] * normal[1] + s.position[2] * normal[2];
  }
  std::sort(slices.begin(), slices.end(), [](const Slice& a, const Slice& b) { return a.z < b.z; });
  double dz = 0;
  if (slices.size() > 1) {
    std::vector<double> gaps;
    for (size_t k = 1; k < slices.size(); ++k) gaps.push_back(slices[k].z - slices[k - 1].z);
    std::vector<double> sorted = gaps;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    dz = sorted[sorted.size() / 2];
    for (size_t k = 0; k < gaps.size(); ++k) {
      if (gaps[k] < 1e-3 * std::max(dz, 1e-3)) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "two slices at the same position (z = %.3f mm along the slice normal)", slices[k].z));
      }
      if (std::abs(gaps[k] - dz) > options.spacing_tolerance * dz) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "uneven slice spacing: %.3f mm between slices %d and %d (z = %.3f), the median gap is "
            "%.3f mm; a slice is missing or the series mixes acquisitions",
            gaps[k], k + 1, k + 2, slices[k].z, dz));
      }
    }
  } else {
    Float64 t = 0;
    DcmDataset* ds = first.file->getDataset();
    dz = (ds->findAndGetFloat64(DCM_SpacingBetweenSlices, t).good() && t > 0) ||
                 (ds->findAndGetFloat64(DCM_SliceThickness, t).good() && t > 0)
             ? t
             : 1.0;
  }

  const int64_t nx = first.cols, ny = first.rows, nz = static_cast<int64_t>(slices.size());
  if (nx * ny > options.max_voxels / nz) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the DICOM series has more than the configured limit of ", options.max_voxels, " voxels"));
  }
  DicomImage out;
  Geometry& g = out.volume.geometry;
  g.size = {nx, ny, nz};
  g.spacing = {first.pixel_spacing[1], first.pixel_spacing[0], dz};
  g.origin = slices.front().position;
  for (int r = 0; r < 3; ++r) {
    g.direction[r * 3 + 0] = row[r];
    g.direction[r * 3 + 1] = col[r];
    g.direction[r * 3 + 2] = normal[r];
  }
  if (auto s = g.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("DICOM geometry: ", s.message()));
  }

  // Pixels.
  out.volume.voxels.resize(static_cast<size_t>(nx * ny * nz));
  DcmDataset* ds0 = first.file->getDataset();
  out.info.study_instance_uid = Str(ds0, DCM_StudyInstanceUID);
  out.info.series_instance_uid = first.series_uid;
  out.info.frame_of_reference_uid = Str(ds0, DCM_FrameOfReferenceUID);
  out.info.modality = first.modality;
  out.info.sop_class_uid = Str(ds0, DCM_SOPClassUID);
  out.info.transfer_syntax = DcmXfer(ds0->getOriginalXfer()).getXferID();
  for (size_t k = 0; k < slices.size(); ++k) {
    auto& s = slices[k];
    DcmDataset* ds = s.file->getDataset();
    out.info.sop_instance_uids.push_back(s.sop_uid);
    const E_TransferSyntax xfer = ds->getOriginalXfer();
    if (xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000 ||
        xfer == EXS_JPEG2000MulticomponentLosslessOnly || xfer == EXS_JPEG2000Multicomponent) {
      return absl::UnimplementedError(absl::StrCat("JPEG 2000 compressed DICOM (transfer syntax ",
                                                   DcmXfer(xfer).getXferID(), ") is not supported"));
    }
    // Native pixel data longer than the file is a lie that loading would
    // allocate for; compressed data decodes to Rows x Columns x BitsAllocated,
    // which the voxel limit above bounds.
    if (!DcmXfer(xfer).isEncapsulated()) {
      // Deflate expands at most ~1032:1.
      const uint64_t bound = static_cast<uint64_t>(s.memory->size()) *
                             (xfer == EXS_DeflatedLittleEndianExplicit ? 1032 : 1);
      DcmElement* native = nullptr;
      if (ds->findAndGetElement(DCM_PixelData, native).good() && native->getLength() > bound) {
        return Refuse(s.file_index, "pixel data is longer than the file (truncated?)");
      }
    }
    if (ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad() ||
        !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
      return absl::UnimplementedError(absl::StrCat("cannot decode DICOM transfer syntax ",
                                                   DcmXfer(xfer).getXferName(), " (",
                                                   DcmXfer(xfer).getXferID(), ")"));
    }
    Uint16 samples = 1, bits_allocated = 0, bits_stored = 0, high_bit = 0, representation = 0;
    ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
    ds->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
    ds->findAndGetUint16(DCM_PixelRepresentation, representation);
    if (ds->findAndGetUint16(DCM_BitsStored, bits_stored).bad()) bits_stored = bits_allocated;
    if (ds->findAndGetUint16(DCM_HighBit, high_bit).bad()) high_bit = bits_stored - 1;
    const std::string photometric = Str(ds, DCM_PhotometricInterpretation);
    if (samples != 1 || (photometric != "MONOCHROME1" && photometric != "MONOCHROME2")) {
      return absl::UnimplementedError(absl::StrCat("photometric interpretation '", photometric,
                                                   "' with ", samples,
                                                   " samples per pixel is not supported (grayscale only)"));
    }
    if ((bits_allocated != 8 && bits_allocated != 16 && bits_allocated != 32) || bits_stored == 0 ||
        bits_stored > bits_allocated || high_bit != bits_stored - 1) {
      return Refuse(s.file_index, absl::StrFormat("unsupported pixel layout (%s %d, %s %d, %s %d)",
                                                  TagName(DCM_BitsAllocated), bits_allocated,
                                                  TagName(DCM_BitsStored), bits_stored,
                                                  TagName(DCM_HighBit), high_bit));
    }
    DcmElement* element = nullptr;
    Uint8* raw = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, element).bad() ||
        element->getUint8Array(raw).bad() || raw == nullptr) {
      return Refuse(s.file_index, "pixel data cannot be read");
    }
    const size_t bytes_per = bits_allocated / 8;
    if (element->getLength() < static_cast<Uint32>(nx * ny * bytes_per)) {
      return Refuse(s.file_index, absl::StrCat("pixel data holds ", element->getLength(),
                                               " bytes, Rows x Columns x BitsAllocated needs ",
                                               nx * ny * bytes_per));
    }
    Float64 slope = 1, intercept = 0;
    if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).bad() || !std::isfinite(slope)) slope = 1;
    if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad() || !std::isfinite(intercept)) {
      intercept = 0;
    }
    const uint64_t mask = bits_stored == 64 ? ~uint64_t{0} : (uint64_t{1} << bits_stored) - 1;
    const uint64_t sign = uint64_t{1} << (bits_stored - 1);
    float* dst = out.volume.voxels.data() + k * nx * ny;
    for (int64_t p = 0; p < nx * ny; ++p) {
      uint64_t v = 0;
      std::memcpy(&v, raw + p * bytes_per, bytes_per);  // little endian after chooseRepresentation
      v &= mask;
      const double value = representation == 1 && (v & sign) ? static_cast<double>(v) - static_cast<double>(mask) - 1.0
                                                              : static_cast<double>(v);
      dst[p] = static_cast<float>(value * slope + intercept);
    }
    s.file.reset();  // release the decoded slice early
    s.memory.reset();
  }
  return out;
}

}  // namespace upp::preprocessing
