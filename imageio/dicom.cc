#include "imageio/dicom.h"

// DCMTK's configuration header must come first.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "imageio/checked_math.h"
#include "imageio/dicom_lengths.h"
#include "imageio/jpeg2000.h"
#include "imageio/jpeg_header.h"

namespace upp::imageio {
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
    // One descriptor per instance until decoded: out of them is the load of
    // the moment (UNAVAILABLE: retried), not this request's fault.
    if (fd < 0 && (errno == EMFILE || errno == ENFILE))
      return absl::UnavailableError("out of file descriptors for the DICOM instances: too many at once; retry");
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

// One parsed file of the series.
struct Source {
  size_t file_index = 0;
  std::unique_ptr<MemFile> memory;
  std::unique_ptr<DcmFileFormat> file;
  std::string series_uid, sop_uid, modality;
  bool localizer = false;         // ImageType LOCALIZER: a scout, never the volume meant
  const Uint8* pixels = nullptr;  // decoded, little endian; set by Decode()
  std::vector<Uint8> decoded;     // owns `pixels` when we decoded them (JPEG 2000)
  Uint16 bits_allocated = 0, bits_stored = 0, representation = 0;
};

// One 2-D image of the series: a single-frame file, or one frame of a
// multi-frame (enhanced) file.
struct Slice {
  Source* source = nullptr;
  size_t file_index = 0;
  int frame = 0;  // 0-based frame in its file
  std::string sop_uid;
  std::array<double, 3> position{};
  std::array<double, 6> orientation{};
  std::array<double, 2> pixel_spacing{};  // row spacing (y), column spacing (x)
  uint16_t rows = 0, cols = 0;
  double slope = 1, intercept = 0;
  double z = 0;  // position along the normal
};

std::string Str(DcmDataset* ds, const DcmTagKey& tag) {
  OFString s;
  return ds->findAndGetOFStringArray(tag, s).good() ? std::string(s.c_str()) : std::string();
}

template <size_t N>
bool Floats(DcmItem* ds, const DcmTagKey& tag, std::array<double, N>* out) {
  if (ds == nullptr) return false;
  for (size_t i = 0; i < N; ++i) {
    Float64 v;
    if (ds->findAndGetFloat64(tag, v, static_cast<unsigned long>(i)).bad() || !std::isfinite(v)) {
      return false;
    }
    (*out)[i] = v;
  }
  return true;
}

std::string TagName(const DcmTagKey& tag) { return DcmTag(tag).getTagName(); }

// A value inside a functional-group macro: group -> macro sequence item 0 -> tag.
template <size_t N>
bool FgFloats(DcmItem* group, const DcmTagKey& macro, const DcmTagKey& tag, std::array<double, N>* out) {
  DcmItem* inner = nullptr;
  if (group == nullptr || group->findAndGetSequenceItem(macro, inner, 0).bad()) return false;
  return Floats(inner, tag, out);
}

// Per-frame value if present, else shared.
template <size_t N>
bool FrameFloats(DcmItem* per_frame, DcmItem* shared, const DcmTagKey& macro, const DcmTagKey& tag,
                 std::array<double, N>* out) {
  return FgFloats(per_frame, macro, tag, out) || FgFloats(shared, macro, tag, out);
}

// ImageType's third value (PS3.3 C.8.2.1.1.1) says LOCALIZER for the scout
// views that CT exports carry beside the axial series.
bool IsLocalizer(DcmDataset* ds) {
  OFString value;
  return ds->findAndGetOFString(DCM_ImageType, value, 2).good() && value == "LOCALIZER";
}

// CANCELLED when the caller says its request has ended.
absl::Status CheckCancelled(const DicomSeriesOptions& options) {
  if (options.cancelled && options.cancelled())
    return absl::CancelledError("the request ended while its DICOM input was being decoded");
  return absl::OkStatus();
}

absl::Status Refuse(size_t index, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("DICOM file #", index + 1, ": ", what));
}

// Bits and photometric interpretation of the (decoded) pixel data; grayscale
// with BitsAllocated 8, 16 or 32 and HighBit = BitsStored - 1 only.
absl::Status ReadPixelLayout(DcmDataset* ds, Source& src) {
  Uint16 samples = 1, high_bit = 0;
  ds->findAndGetUint16(DCM_SamplesPerPixel, samples);
  ds->findAndGetUint16(DCM_BitsAllocated, src.bits_allocated);
  ds->findAndGetUint16(DCM_PixelRepresentation, src.representation);
  if (ds->findAndGetUint16(DCM_BitsStored, src.bits_stored).bad()) src.bits_stored = src.bits_allocated;
  if (ds->findAndGetUint16(DCM_HighBit, high_bit).bad()) high_bit = src.bits_stored - 1;
  const std::string photometric = Str(ds, DCM_PhotometricInterpretation);
  if (samples != 1 || (photometric != "MONOCHROME1" && photometric != "MONOCHROME2")) {
    return absl::UnimplementedError(absl::StrCat("photometric interpretation '", photometric, "' with ", samples,
                                                 " samples per pixel is not supported (grayscale only)"));
  }
  if ((src.bits_allocated != 8 && src.bits_allocated != 16 && src.bits_allocated != 32) || src.bits_stored == 0 ||
      src.bits_stored > src.bits_allocated || high_bit != src.bits_stored - 1) {
    return Refuse(
        src.file_index,
        absl::StrFormat("unsupported pixel layout (%s %d, %s %d, %s %d)", TagName(DCM_BitsAllocated),
                        src.bits_allocated, TagName(DCM_BitsStored), src.bits_stored, TagName(DCM_HighBit), high_bit));
  }
  return absl::OkStatus();
}

// Calls `fn` with each frame's codestream (the concatenation of its
// fragments) of encapsulated pixel data, in frame order. A frame is the
// fragments from its start fragment (DCMTK's rule: the offset table, else one
// fragment per frame, else all fragments for one frame) to the next frame's.
// The copy is bounded by the file's size.
absl::Status ForEachFrameCodestream(DcmDataset* ds, Sint32 frames, const char* codec,
                                    absl::FunctionRef<absl::Status(Sint32, std::string_view)> fn) {
  DcmElement* element = nullptr;
  DcmPixelSequence* sequence = nullptr;
  if (ds->findAndGetElement(DCM_PixelData, element).bad() ||
      static_cast<DcmPixelData*>(element)
          ->getEncapsulatedRepresentation(ds->getOriginalXfer(), nullptr, sequence)
          .bad() ||
      sequence == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(codec, " pixel data is not encapsulated"));
  }
  const Uint32 items = static_cast<Uint32>(sequence->card());
  if (items < 2) return absl::InvalidArgumentError(absl::StrCat(codec, " pixel data has no fragments"));
  std::vector<Uint32> starts;
  for (Sint32 f = 0; f < frames; ++f) {
    Uint32 start = 0;
    if (DcmCodec::determineStartFragment(static_cast<Uint32>(f), frames, sequence, start).bad() || start < 1 ||
        start >= items || (!starts.empty() && start <= starts.back())) {
      return absl::InvalidArgumentError(absl::StrCat("cannot find the fragments of ", codec, " frame ", f + 1));
    }
    starts.push_back(start);
  }
  std::string codestream;
  for (Sint32 f = 0; f < frames; ++f) {
    codestream.clear();
    const Uint32 end = f + 1 < frames ? starts[f + 1] : items;
    for (Uint32 i = starts[f]; i < end; ++i) {
      DcmPixelItem* item = nullptr;
      Uint8* data = nullptr;
      if (sequence->getItem(item, i).bad() || item == nullptr) continue;
      const Uint32 length = item->getLength();
      if (length == 0) continue;
      if (item->getUint8Array(data).bad() || data == nullptr)
        return absl::InvalidArgumentError(absl::StrCat("a ", codec, " fragment cannot be read"));
      codestream.append(reinterpret_cast<const char*>(data), length);
    }
    if (auto st = fn(f, codestream); !st.ok()) return st;
  }
  return absl::OkStatus();
}

// JPEG and JPEG-LS: every frame's own header must describe the image the
// DICOM header describes before DCMTK decodes it (imageio/jpeg_header.h says
// why).
absl::Status CheckJpegFrameHeaders(DcmDataset* ds, int64_t rows, int64_t cols, Sint32 frames, const Source& src) {
  return ForEachFrameCodestream(ds, frames, "JPEG", [&](Sint32 f, std::string_view codestream) -> absl::Status {
    auto header = ReadJpegFrameHeader(codestream);
    if (!header.ok()) return Refuse(src.file_index, absl::StrCat("frame ", f + 1, ": ", header.status().message()));
    if (header->rows != rows || header->columns != cols || header->components != 1 ||
        header->precision > src.bits_allocated) {
      return Refuse(src.file_index, absl::StrCat("frame ", f + 1, ": the JPEG frame header says ", header->columns,
                                                 " x ", header->rows, ", ", header->components, " component(s) of ",
                                                 header->precision, " bits; the DICOM header says ", cols, " x ", rows,
                                                 ", 1 of at most ", src.bits_allocated));
    }
    return absl::OkStatus();
  });
}

// JPEG 2000 (1.2.840.10008.1.2.4.90/.91) frames decoded with OpenJPEG into
// src.decoded as little-endian words of BitsAllocated, like DCMTK's decoders
// leave theirs. Where the codestream's signedness
// differs from PixelRepresentation, PixelRepresentation wins and the sign bit
// is the codestream's top bit (pydicom does the same): writers that stored
// signed CT values as unsigned samples are the known case (pydicom's
// J2K_pixelrep_mismatch.dcm: air reads -1000, not 7192).
absl::Status DecodeJpeg2000Pixels(DcmDataset* ds, int rows, int cols, Sint32 frames, Source& src,
                                  const DicomSeriesOptions& options) {
  const size_t bytes = src.bits_allocated / 8;
  const size_t frame_values = static_cast<size_t>(rows) * cols;
  src.decoded.assign(frame_values * bytes * frames, 0);
  const absl::Status decoded =
      ForEachFrameCodestream(ds, frames, "JPEG 2000", [&](Sint32 f, std::string_view codestream) -> absl::Status {
        if (auto st = CheckCancelled(options); !st.ok()) return st;
        auto frame =
            DecodeJpeg2000Frame(reinterpret_cast<const uint8_t*>(codestream.data()), codestream.size(), rows, cols);
        if (!frame.ok()) return frame.status();
        if (frame->precision > src.bits_allocated)
          return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 samples of ", frame->precision,
                                                         " bits do not fit BitsAllocated ", src.bits_allocated));
        if (frame->is_signed != (src.representation == 1))
          src.bits_stored = static_cast<Uint16>(std::max<int>(frame->precision, 1));
        Uint8* dst = src.decoded.data() + static_cast<size_t>(f) * frame_values * bytes;
        for (size_t p = 0; p < frame_values; ++p) {
          const uint32_t v = static_cast<uint32_t>(frame->values[p]);  // two's complement bits
          std::memcpy(dst + p * bytes, &v, bytes);                     // little-endian host
        }
        return absl::OkStatus();
      });
  if (!decoded.ok()) return decoded;
  src.pixels = src.decoded.data();
  return absl::OkStatus();
}

bool IsJpegOrJpegLs(E_TransferSyntax xfer) {
  return DcmXfer(xfer).getJPEGProcess8Bit() != 0 || xfer == EXS_JPEGLSLossless || xfer == EXS_JPEGLSLossy;
}

// Decodes (or, for native data, checks and points at) the pixels of one file
// of the series, whose slices are nx x ny. Every length is checked against
// what the element really holds before any frame is read.
absl::Status DecodeSourcePixels(Source& src, int64_t nx, int64_t ny, const DicomSeriesOptions& options) {
  DcmDataset* ds = src.file->getDataset();
  const E_TransferSyntax xfer = ds->getOriginalXfer();
  if (xfer == EXS_JPEG2000MulticomponentLosslessOnly || xfer == EXS_JPEG2000Multicomponent) {
    return absl::UnimplementedError(absl::StrCat("JPEG 2000 Part 2 multi-component DICOM (transfer syntax ",
                                                 DcmXfer(xfer).getXferID(), ") is not supported"));
  }
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  if (xfer == EXS_JPEG2000LosslessOnly || xfer == EXS_JPEG2000) {
    if (auto st = ReadPixelLayout(ds, src); !st.ok()) return st;
    if (auto st = DecodeJpeg2000Pixels(ds, static_cast<int>(ny), static_cast<int>(nx), frames, src, options);
        !st.ok()) {
      if (absl::IsCancelled(st)) return st;
      return absl::Status(st.code(), absl::StrCat("DICOM file #", src.file_index + 1, ": ", st.message()));
    }
  } else {
    // Native pixel data longer than the file is a lie that loading would
    // allocate for; compressed data decodes to Rows x Columns x BitsAllocated
    // per frame, which the voxel limit above bounds.
    if (!DcmXfer(xfer).isEncapsulated()) {
      // Deflate expands at most ~1032:1.
      const uint64_t bound =
          static_cast<uint64_t>(src.memory->size()) * (xfer == EXS_DeflatedLittleEndianExplicit ? 1032 : 1);
      DcmElement* native = nullptr;
      if (ds->findAndGetElement(DCM_PixelData, native).good() && native->getLength() > bound) {
        return Refuse(src.file_index, "pixel data is longer than the file (truncated?)");
      }
    }
    // The layout (grayscale, 8/16/32 bits) bounds what DCMTK's decoders
    // allocate: they size their output from these attributes, so a claimed
    // BitsAllocated of 65528 would cost 8191 bytes per pixel.
    if (auto st = ReadPixelLayout(ds, src); !st.ok()) return st;
    if (IsJpegOrJpegLs(xfer))
      if (auto st = CheckJpegFrameHeaders(ds, ny, nx, frames, src); !st.ok()) return st;
    if (ds->chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad() ||
        !ds->canWriteXfer(EXS_LittleEndianExplicit)) {
      return absl::UnimplementedError(absl::StrCat("cannot decode DICOM transfer syntax ", DcmXfer(xfer).getXferName(),
                                                   " (", DcmXfer(xfer).getXferID(), ")"));
    }
    if (auto st = ReadPixelLayout(ds, src); !st.ok()) return st;
    DcmElement* element = nullptr;
    Uint8* raw = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, element).bad() || element->getUint8Array(raw).bad() || raw == nullptr) {
      return Refuse(src.file_index, "pixel data cannot be read");
    }
    // 64-bit and checked: a product of exactly 2^32 bytes must not pass
    // as 0 (every frame read below stays inside these bytes).
    const int64_t needed = OrMax(CheckedProduct({nx, ny, src.bits_allocated / 8, frames}));
    if (static_cast<int64_t>(element->getLength()) < needed) {
      return Refuse(src.file_index, absl::StrCat("pixel data holds ", element->getLength(),
                                                 " bytes, Rows x Columns x BitsAllocated x frames needs ", needed));
    }
    src.pixels = raw;
  }
  return absl::OkStatus();
}

using SeriesMap = std::map<std::string, std::vector<std::unique_ptr<Source>>>;

// What phase 1 found: the image series, and who the files belong to
// (counts per PatientID and StudyInstanceUID; the values stay in here).
struct GroupedFiles {
  SeriesMap by_series;
  std::map<std::string, int64_t> patients, studies;
  std::map<std::string, int64_t> skipped;  // reason -> files
};

// Counts only: an identifier must not reach a message.
std::string CountsOf(const std::map<std::string, int64_t>& values) {
  std::vector<int64_t> counts;
  for (const auto& [value, n] : values) counts.push_back(n);
  std::sort(counts.rbegin(), counts.rend());
  return absl::StrJoin(counts, ", ");
}

// A request is one patient's study: instances of two patients (or of two
// studies, which may be two patients whose IDs were not filled in) in one
// folder would otherwise come back as one of them, silently.
absl::Status CheckOnePatientAndStudy(const GroupedFiles& grouped) {
  if (grouped.patients.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("the DICOM instances belong to ", grouped.patients.size(),
                     " patients (PatientID differs; instances per patient: ", CountsOf(grouped.patients),
                     "): send one patient's series per request"));
  }
  if (grouped.studies.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("the DICOM instances belong to ", grouped.studies.size(),
                     " studies (StudyInstanceUID differs; instances per study: ", CountsOf(grouped.studies),
                     "): send one study's series per request"));
  }
  return absl::OkStatus();
}

// Phase 1: every file's lengths checked, parsed lazily, grouped by series
// (files without pixel data, e.g. SR or RT plans, are left out, counted).
absl::StatusOr<GroupedFiles> GroupBySeries(const std::vector<std::string_view>& files,
                                           const DicomSeriesOptions& options) {
  GroupedFiles grouped;
  for (size_t i = 0; i < files.size(); ++i) {
    if (auto st = CheckCancelled(options); !st.ok()) return st;
    // Before any length is read: a text file's first bytes read as a tag
    // claiming thousands of bytes, and "truncated" would mislead.
    if (!LooksLikeDicom(files[i]))
      return absl::InvalidArgumentError(
          absl::StrCat("file #", i + 1, " is not a DICOM file (no DICM prefix at byte 128, no data set at its start)"));
    // A deflated file is read whole, not lazily: a few MB can inflate to a
    // GB that DCMTK keeps until the read ends, so that memory is reserved
    // before anything inflates it.
    auto held = DicomBytesHeldWhole(files[i]);
    if (!held.ok()) return Refuse(i, std::string(held.status().message()));
    if (*held > 0 && options.reserve)
      if (auto s = options.reserve(OrMax(CheckedMul(*held, 2))); !s.ok()) return s;
    // Structure first: DCMTK would allocate what a corrupt element claims,
    // sort unordered tags in quadratic time, and hold ~200 bytes per element
    // and a copy of every value up to kLazyValueBytes (both bounded, and
    // reserved here, before it parses).
    auto cost = CheckDicomStructure(files[i], kLazyValueBytes);
    if (!cost.ok()) return Refuse(i, std::string(cost.status().message()));
    if (options.reserve)
      if (auto s = options.reserve(DcmtkParseBytes(*cost)); !s.ok()) return s;
    auto memory = MemFile::Create(files[i]);
    if (!memory.ok()) return memory.status();
    auto file = std::make_unique<DcmFileFormat>();
    OFCondition cond =
        file->loadFile((*memory)->Path().c_str(), EXS_Unknown, EGL_noChange, kLazyValueBytes, ERM_autoDetect);
    if (cond.bad()) return Refuse(i, absl::StrCat("not a readable DICOM file (", cond.text(), ")"));
    DcmDataset* ds = file->getDataset();
    if (!ds->tagExists(DCM_PixelData)) {  // SR, RT plan, ...: not an image, never segmented
      ++grouped.skipped["not an image (no pixel data)"];
      continue;
    }
    // Only images count: an RT structure set or a dose report may come from
    // a study of its own. An empty PatientID is unknown, not a patient (two
    // anonymised patients still differ by study).
    if (const std::string patient = Str(ds, DCM_PatientID); !patient.empty()) ++grouped.patients[patient];
    ++grouped.studies[Str(ds, DCM_StudyInstanceUID)];
    auto s = std::make_unique<Source>();
    s->file_index = i;
    s->series_uid = Str(ds, DCM_SeriesInstanceUID);
    s->sop_uid = Str(ds, DCM_SOPInstanceUID);
    s->modality = Str(ds, DCM_Modality);
    s->localizer = IsLocalizer(ds);
    if (s->series_uid.empty()) return Refuse(i, "image without a SeriesInstanceUID");
    s->file = std::move(file);
    s->memory = std::move(*memory);
    const std::string uid = s->series_uid;
    grouped.by_series[uid].push_back(std::move(s));
  }
  if (auto s = CheckOnePatientAndStudy(grouped); !s.ok()) return s;
  if (grouped.by_series.empty()) return absl::InvalidArgumentError("none of the DICOM files is an image");
  return grouped;
}

bool AllowedModality(const DicomSeriesOptions& options, const std::string& modality) {
  return options.modalities.empty() ||
         std::find(options.modalities.begin(), options.modalities.end(), modality) != options.modalities.end();
}

// Several candidate series: refused with their sizes and first files (the
// UIDs stay out of the message; the caller has the files and names one).
absl::Status SeveralSeries(const std::vector<std::vector<std::unique_ptr<Source>>*>& candidates) {
  std::vector<std::string> each;
  for (const auto* slices : candidates) {
    size_t first = slices->front()->file_index;
    for (const auto& s : *slices) first = std::min(first, s->file_index);
    each.push_back(absl::StrCat(slices->size(), " instances from file #", first + 1));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the DICOM instances hold ", candidates.size(), " image series of one study (", absl::StrJoin(each, "; "),
      "): name the one to segment (the request header's series_instance_uid; upp-client --series UID)"));
}

// Phase 2: the requested series, else the only one of an allowed modality;
// the other series are counted as skipped.
absl::StatusOr<std::vector<std::unique_ptr<Source>>*> ChooseSeries(GroupedFiles& grouped,
                                                                   const DicomSeriesOptions& options) {
  std::vector<std::unique_ptr<Source>>* chosen = nullptr;
  if (!options.series_instance_uid.empty()) {
    auto it = grouped.by_series.find(options.series_instance_uid);
    if (it == grouped.by_series.end()) {
      return absl::InvalidArgumentError(absl::StrCat("the requested SeriesInstanceUID is not among the images (",
                                                     grouped.by_series.size(), " image series)"));
    }
    chosen = &it->second;
    // Named or not, the model takes only its modalities: an MR series sent
    // to a CT model would be normalised as CT and come back as labels.
    if (!AllowedModality(options, chosen->front()->modality)) {
      return absl::FailedPreconditionError(absl::StrCat("the requested series is not of a modality the model takes (",
                                                        absl::StrJoin(options.modalities, ", "), ")"));
    }
  } else {
    std::vector<std::vector<std::unique_ptr<Source>>*> candidates;
    for (auto& [uid, slices] : grouped.by_series)
      if (AllowedModality(options, slices.front()->modality) && !slices.front()->localizer)
        candidates.push_back(&slices);
    if (candidates.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("no image series (other than localizers) of an allowed modality (",
                                                     absl::StrJoin(options.modalities, ", "), ") among ",
                                                     grouped.by_series.size(), " series"));
    }
    if (candidates.size() > 1) return SeveralSeries(candidates);
    chosen = candidates.front();
  }
  for (auto& [uid, slices] : grouped.by_series) {
    if (&slices == chosen) continue;
    const char* reason = !AllowedModality(options, slices.front()->modality)
                             ? "a series of a modality the model does not take"
                         : slices.front()->localizer ? "a localizer (scout) series"
                                                     : "another series";
    grouped.skipped[reason] += static_cast<int64_t>(slices.size());
  }
  return chosen;
}

// Phase 3: one record per 2-D image with its geometry: single-frame files
// from their top level, multi-frame (enhanced) files from their per-frame
// and shared functional groups (position, orientation, pixel measures,
// rescale). Frame counts are checked before any record is built.
absl::Status AppendSlices(Source& source, const DicomSeriesOptions& options, int64_t& series_frames,
                          std::vector<Slice>& slices) {
  Source* const src_ptr = &source;
  DcmDataset* ds = src_ptr->file->getDataset();
  Uint16 rows = 0, cols = 0;
  if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, cols).bad() || rows == 0 ||
      cols == 0) {
    return Refuse(src_ptr->file_index, "missing or zero Rows/Columns");
  }
  Sint32 frames = 1;
  if (ds->findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  DcmItem* shared = nullptr;
  ds->findAndGetSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
  const bool enhanced = ds->tagExists(DCM_PerFrameFunctionalGroupsSequence);
  if (frames > 1 && !enhanced) {
    return Refuse(src_ptr->file_index, "multi-frame image without per-frame functional groups");
  }
  // One record per frame is built below: the claimed count must be backed
  // by a functional-group item per frame (items occupy bytes of the file,
  // a count does not), and the series total must fit the voxel limit
  // before any record exists.
  if (enhanced && frames > 1) {
    DcmSequenceOfItems* per_frame_groups = nullptr;
    ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame_groups);
    const int64_t items = per_frame_groups ? static_cast<int64_t>(per_frame_groups->card()) : 0;
    if (items < frames)
      return Refuse(src_ptr->file_index, absl::StrCat("NumberOfFrames is ", frames, " but only ", items,
                                                      " frames have their per-frame functional groups"));
  }
  series_frames += frames;
  if (OrMax(CheckedProduct({rows, cols, series_frames})) > options.max_voxels) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the DICOM series has more than the configured limit of ", options.max_voxels, " voxels"));
  }
  for (int f = 0; f < frames; ++f) {
    Slice s;
    s.source = src_ptr;
    s.file_index = src_ptr->file_index;
    s.frame = f;
    s.sop_uid = src_ptr->sop_uid;
    s.rows = rows;
    s.cols = cols;
    std::array<double, 1> slope{1}, intercept{0};
    if (enhanced) {
      DcmItem* per_frame = nullptr;
      ds->findAndGetSequenceItem(DCM_PerFrameFunctionalGroupsSequence, per_frame, f);
      if (!FrameFloats(per_frame, shared, DCM_PlanePositionSequence, DCM_ImagePositionPatient, &s.position)) {
        return Refuse(s.file_index, absl::StrCat("frame ", f + 1, ": missing ImagePositionPatient"));
      }
      if (!FrameFloats(per_frame, shared, DCM_PlaneOrientationSequence, DCM_ImageOrientationPatient, &s.orientation)) {
        return Refuse(s.file_index, absl::StrCat("frame ", f + 1, ": missing ImageOrientationPatient"));
      }
      if (!FrameFloats(per_frame, shared, DCM_PixelMeasuresSequence, DCM_PixelSpacing, &s.pixel_spacing)) {
        return Refuse(s.file_index, absl::StrCat("frame ", f + 1, ": missing PixelSpacing"));
      }
      if (!FrameFloats(per_frame, shared, DCM_PixelValueTransformationSequence, DCM_RescaleSlope, &slope) ||
          !FrameFloats(per_frame, shared, DCM_PixelValueTransformationSequence, DCM_RescaleIntercept, &intercept)) {
        Floats(ds, DCM_RescaleSlope, &slope);
        Floats(ds, DCM_RescaleIntercept, &intercept);
      }
    } else {
      if (!Floats(ds, DCM_ImagePositionPatient, &s.position)) {
        return Refuse(s.file_index, "missing or invalid ImagePositionPatient");
      }
      if (!Floats(ds, DCM_ImageOrientationPatient, &s.orientation)) {
        return Refuse(s.file_index, "missing or invalid ImageOrientationPatient");
      }
      if (!Floats(ds, DCM_PixelSpacing, &s.pixel_spacing)) {
        return Refuse(s.file_index, "missing or invalid PixelSpacing");
      }
      Floats(ds, DCM_RescaleSlope, &slope);
      Floats(ds, DCM_RescaleIntercept, &intercept);
    }
    s.slope = slope[0];
    s.intercept = intercept[0];
    slices.push_back(std::move(s));
  }
  return absl::OkStatus();
}

struct SeriesGeometry {
  std::array<double, 3> row, col, normal;
  double dz = 0;
};

// Phase 4: one orientation, size and pixel spacing for all slices; sorted
// along the normal, evenly spaced (a missing slice is refused).
absl::StatusOr<SeriesGeometry> SortAndSpace(std::vector<Slice>& slices, const DicomSeriesOptions& options) {
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
      return absl::InvalidArgumentError(
          absl::StrFormat("the series mixes slice sizes (%dx%d and %dx%d)", first.cols, first.rows, s.cols, s.rows));
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
        return absl::InvalidArgumentError(
            absl::StrFormat("two slices at the same position (z = %.3f mm along the slice normal)", slices[k].z));
      }
      if (std::abs(gaps[k] - dz) > options.spacing_tolerance * dz) {
        return absl::InvalidArgumentError(
            absl::StrFormat("uneven slice spacing: %.3f mm between slices %d and %d (z = %.3f), the median gap is "
                            "%.3f mm; a slice is missing or the series mixes acquisitions",
                            gaps[k], k + 1, k + 2, slices[k].z, dz));
      }
    }
  } else {
    Float64 t = 0;
    DcmDataset* ds = first.source->file->getDataset();
    dz = (ds->findAndGetFloat64(DCM_SpacingBetweenSlices, t).good() && t > 0) ||
                 (ds->findAndGetFloat64(DCM_SliceThickness, t).good() && t > 0)
             ? t
             : 1.0;
  }

  return SeriesGeometry{row, col, normal, dz};
}

// Phase 5: the volume's grid, checked against the voxel limit.
absl::StatusOr<Geometry> SeriesGrid(const std::vector<Slice>& slices, const SeriesGeometry& sg,
                                    const DicomSeriesOptions& options) {
  const Slice& first = slices.front();
  const auto& row = sg.row;
  const auto& col = sg.col;
  const auto& normal = sg.normal;
  const double dz = sg.dz;
  const int64_t nx = first.cols, ny = first.rows, nz = static_cast<int64_t>(slices.size());
  if (nx * ny > options.max_voxels / nz) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the DICOM series has more than the configured limit of ", options.max_voxels, " voxels"));
  }
  Geometry g;
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

  return g;
}

// Phase 6: every file decoded (lengths checked) before the volume exists,
// then each slice's values rescaled into it; the series' references.
absl::StatusOr<DicomImage> DecodeSlices(std::vector<Slice>& slices, const Geometry& g,
                                        const DicomSeriesOptions& options) {
  const Slice& first = slices.front();
  const int64_t nx = g.size[0], ny = g.size[1], nz = g.size[2];
  DicomImage out;
  out.volume.geometry = g;
  if (options.admit)
    if (auto st = options.admit(g); !st.ok()) return st;
  // Pixels: every file decoded and its lengths checked before the volume is
  // allocated, so that a lying file costs nothing of that size.
  for (auto& s : slices) {
    if (s.source->pixels != nullptr) continue;
    if (auto st = CheckCancelled(options); !st.ok()) return st;
    if (auto st = DecodeSourcePixels(*s.source, nx, ny, options); !st.ok()) return st;
  }
  out.volume.voxels.resize(static_cast<size_t>(nx * ny * nz));
  DcmDataset* ds0 = first.source->file->getDataset();
  out.info.study_instance_uid = Str(ds0, DCM_StudyInstanceUID);
  out.info.series_instance_uid = first.source->series_uid;
  out.info.frame_of_reference_uid = Str(ds0, DCM_FrameOfReferenceUID);
  out.info.modality = first.source->modality;
  out.info.sop_class_uid = Str(ds0, DCM_SOPClassUID);
  out.info.transfer_syntax = DcmXfer(ds0->getOriginalXfer()).getXferID();
  for (size_t k = 0; k < slices.size(); ++k) {
    auto& s = slices[k];
    out.info.sop_instance_uids.push_back(s.sop_uid);
    out.info.frame_numbers.push_back(s.frame + 1);
    out.info.file_indices.push_back(s.file_index);
    Source& src = *s.source;
    const size_t bytes_per = src.bits_allocated / 8;  // known once the file is decoded (above)
    const int64_t frame_bytes = nx * ny * static_cast<int64_t>(bytes_per);
    const Uint8* raw = src.pixels + s.frame * frame_bytes;
    const double slope = std::isfinite(s.slope) ? s.slope : 1.0;
    const double intercept = std::isfinite(s.intercept) ? s.intercept : 0.0;
    const uint64_t mask = src.bits_stored == 64 ? ~uint64_t{0} : (uint64_t{1} << src.bits_stored) - 1;
    const uint64_t sign = uint64_t{1} << (src.bits_stored - 1);
    float* dst = out.volume.voxels.data() + k * nx * ny;
    for (int64_t p = 0; p < nx * ny; ++p) {
      uint64_t v = 0;
      std::memcpy(&v, raw + p * bytes_per, bytes_per);  // little endian after chooseRepresentation
      v &= mask;
      const double value = src.representation == 1 && (v & sign)
                               ? static_cast<double>(v) - static_cast<double>(mask) - 1.0
                               : static_cast<double>(v);
      dst[p] = static_cast<float>(value * slope + intercept);
    }
  }
  return out;
}

}  // namespace

bool LooksLikeDicom(std::string_view bytes) {
  constexpr size_t kPreamble = 128;
  if (bytes.size() >= kPreamble + 4 && bytes.substr(kPreamble, 4) == "DICM") return true;
  // A bare data set: its first element's group, little endian, and an
  // element number below the group's largest standard one (0x0008's
  // elements are < 0x2000; 0x0002's < 0x0200) so that text such as "\x08\0"
  // does not pass by accident.
  if (bytes.size() < 8) return false;
  const auto u16 = [&](size_t at) {
    return static_cast<unsigned>(static_cast<unsigned char>(bytes[at])) |
           static_cast<unsigned>(static_cast<unsigned char>(bytes[at + 1])) << 8;
  };
  const unsigned group = u16(0), element = u16(2);
  return (group == 0x0008 && element < 0x2000) || (group == 0x0002 && element < 0x0200);
}

absl::StatusOr<DicomImage> ReadDicomSeries(const std::vector<std::string_view>& files,
                                           const DicomSeriesOptions& options) {
  RegisterCodecsOnce();
  if (files.empty()) return absl::InvalidArgumentError("no DICOM files were given");
  auto grouped = GroupBySeries(files, options);
  if (!grouped.ok()) return grouped.status();
  auto chosen = ChooseSeries(*grouped, options);
  if (!chosen.ok()) return chosen.status();
  std::vector<Slice> slices;
  int64_t series_frames = 0;
  for (auto& src : **chosen)
    if (auto s = AppendSlices(*src, options, series_frames, slices); !s.ok()) return s;
  auto spacing = SortAndSpace(slices, options);
  if (!spacing.ok()) return spacing.status();
  auto grid = SeriesGrid(slices, *spacing, options);
  if (!grid.ok()) return grid.status();
  auto image = DecodeSlices(slices, *grid, options);
  if (!image.ok()) return image.status();
  image->info.instances_used = static_cast<int64_t>((*chosen)->size());
  image->info.skipped = std::move(grouped->skipped);
  return image;
}

}  // namespace upp::imageio
