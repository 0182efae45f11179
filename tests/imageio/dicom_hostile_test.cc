// Hostile DICOM headers against ReadDicomSeries: sizes whose products wrap at
// 32 bits and frame counts that nothing in the file backs are refused before
// anything of their size is allocated or read.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>

#include "imageio/dicom.h"
#include "imageio/dicom_lengths.h"
#include "imageio/file_util.h"
#include "tests/testing/deflated_dicom.h"
#include "tests/testing/hostile_dicom.h"
#include "tests/testing/rss.h"
#include "tests/testing/temp_path.h"

namespace upp::imageio {
namespace {

struct CtSpec {
  Uint16 rows = 4, cols = 4, bits = 16;
  Sint32 frames = 1;        // > 1: an enhanced (multi-frame) file
  int per_frame_items = 1;  // per-frame functional group items written
  size_t pixel_bytes = 32;
};

// A minimal CT image (or enhanced CT with functional groups) as file bytes.
std::string MakeCt(const CtSpec& spec) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  char uid[100];
  ds->putAndInsertString(DCM_SOPClassUID, spec.frames > 1 ? UID_EnhancedCTImageStorage : UID_CTImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
  ds->putAndInsertString(DCM_SeriesInstanceUID, "1.2.3.4");
  ds->putAndInsertString(DCM_StudyInstanceUID, "1.2.3");
  ds->putAndInsertString(DCM_Modality, "CT");
  ds->putAndInsertUint16(DCM_Rows, spec.rows);
  ds->putAndInsertUint16(DCM_Columns, spec.cols);
  ds->putAndInsertUint16(DCM_BitsAllocated, spec.bits);
  ds->putAndInsertUint16(DCM_BitsStored, spec.bits);
  ds->putAndInsertUint16(DCM_HighBit, spec.bits - 1);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  if (spec.frames > 1) {
    ds->putAndInsertString(DCM_NumberOfFrames, std::to_string(spec.frames).c_str());
    DcmItem* shared = nullptr;
    ds->findOrCreateSequenceItem(DCM_SharedFunctionalGroupsSequence, shared, 0);
    DcmItem* g = nullptr;
    shared->findOrCreateSequenceItem(DCM_PlaneOrientationSequence, g, 0);
    g->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
    shared->findOrCreateSequenceItem(DCM_PixelMeasuresSequence, g, 0);
    g->putAndInsertString(DCM_PixelSpacing, "1\\1");
    for (int f = 0; f < spec.per_frame_items; ++f) {
      DcmItem* frame = nullptr;
      ds->findOrCreateSequenceItem(DCM_PerFrameFunctionalGroupsSequence, frame, f);
      frame->findOrCreateSequenceItem(DCM_PlanePositionSequence, g, 0);
      g->putAndInsertString(DCM_ImagePositionPatient, ("0\\0\\" + std::to_string(f)).c_str());
    }
  } else {
    ds->putAndInsertString(DCM_ImagePositionPatient, "0\\0\\0");
    ds->putAndInsertString(DCM_ImageOrientationPatient, "1\\0\\0\\0\\1\\0");
    ds->putAndInsertString(DCM_PixelSpacing, "1\\1");
  }
  std::vector<Uint8> pixels(spec.pixel_bytes, 7);
  ds->putAndInsertUint8Array(DCM_PixelData, pixels.data(), pixels.size());
  const std::string path = upp::testing::UniqueTempPath("hostile_ct.dcm");
  EXPECT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  std::string bytes = ReadWholeFile(path).value_or("");
  std::filesystem::remove(path);
  return bytes;
}

// The file `MakeCt` made, re-encoded in `xfer` by DCMTK's own encoders, with
// `lie` applied to the dataset after encoding.
std::string Reencode(const std::string& bytes, E_TransferSyntax xfer, const std::function<void(DcmDataset*)>& lie) {
  static const bool registered = [] {
    DJEncoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();
    return true;
  }();
  (void)registered;
  const std::string path = upp::testing::UniqueTempPath("hostile_reencoded.dcm");
  std::ofstream(path, std::ios::binary) << bytes;
  DcmFileFormat file;
  EXPECT_TRUE(file.loadFile(path.c_str()).good());
  DcmDataset* ds = file.getDataset();
  const DJ_RPLossless lossless;
  EXPECT_TRUE(ds->chooseRepresentation(xfer, xfer == EXS_RLELossless ? nullptr : &lossless).good());
  lie(ds);
  EXPECT_TRUE(file.saveFile(path.c_str(), xfer).good());
  std::string out = ReadWholeFile(path).value_or("");
  std::filesystem::remove(path);
  return out;
}

TEST(DicomHostileTest, AWellFormedFileReads) {
  auto image = ReadDicomSeries({MakeCt({})});
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->volume.voxels.size(), 16u);
  EXPECT_EQ(image->volume.voxels[0], 7 + 7 * 256);
}

// A README or a NIfTI sent as DICOM: named as not DICOM, not as a corrupt
// element (its text read as a tag claiming thousands of bytes).
TEST(DicomHostileTest, FilesThatAreNotDicomAreNamedSo) {
  const std::string part10 = MakeCt({});
  EXPECT_TRUE(LooksLikeDicom(part10));
  // The same data set without its preamble and file meta (a bare data set).
  DcmFileFormat file;
  DcmInputBufferStream in;
  in.setBuffer(part10.data(), static_cast<offile_off_t>(part10.size()));
  in.setEos();
  file.transferInit();
  ASSERT_TRUE(file.read(in).good());
  file.transferEnd();
  std::string bare(4096, '\0');
  DcmOutputBufferStream out(bare.data(), bare.size());
  file.getDataset()->transferInit();
  ASSERT_TRUE(file.getDataset()->write(out, EXS_LittleEndianExplicit, EET_ExplicitLength, nullptr).good());
  file.getDataset()->transferEnd();
  void* written = nullptr;
  offile_off_t length = 0;
  out.flushBuffer(written, length);
  bare.resize(static_cast<size_t>(length));
  EXPECT_TRUE(LooksLikeDicom(bare));
  auto read_bare = ReadDicomSeries({bare});
  EXPECT_TRUE(read_bare.ok()) << read_bare.status();

  std::string nifti(352, '\0');
  nifti[0] = 0x5c, nifti[1] = 0x01;  // sizeof_hdr = 348
  const std::string text = "This folder holds the export of 2024-03-01.\n" + std::string(200, '-');
  // Group 0008 but an element no standard attribute of it has ("\x08\0AB").
  const std::string group8_text = std::string("\x08\x00\x41\x42", 4) + "CDEFGH and more text";
  for (const std::string& not_dicom : {text, nifti, group8_text, std::string("\x08\x00", 2), std::string()}) {
    EXPECT_FALSE(LooksLikeDicom(not_dicom));
    auto image = ReadDicomSeries({part10, not_dicom});
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(image.status().message(),
              "file #2 is not a DICOM file (no DICM prefix at byte 128, no data set at its start)");
  }
}

// Rows x Columns x BitsAllocated / 8 = 32768 x 32768 x 4 = 2^32 bytes, at the
// default voxel limit (2^30): a 32-bit length check saw 0 bytes needed and the
// reader decoded gigabytes beyond a 4-byte buffer.
TEST(DicomHostileTest, PixelProductOfExactly2To32BytesIsRefusedCheaply) {
  CtSpec spec;
  spec.rows = spec.cols = 32768;
  spec.bits = 32;
  spec.pixel_bytes = 4;
  const std::string file = MakeCt(spec);
  EXPECT_LT(file.size(), 2048u);
  const int64_t rss = testing::ResetPeakRss();
  auto image = ReadDicomSeries({file});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("pixel data holds 4 bytes"), std::string::npos) << image.status();
  EXPECT_NE(image.status().message().find("4294967296"), std::string::npos) << image.status();
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{256} << 20);
}

// NumberOfFrames far beyond the functional-group items that exist: refused
// before one record per claimed frame is built.
TEST(DicomHostileTest, FramesWithoutTheirFunctionalGroupsAreRefused) {
  CtSpec spec;
  spec.rows = spec.cols = 1;
  spec.frames = 1 << 30;
  spec.per_frame_items = 2;
  spec.pixel_bytes = 4;
  const int64_t rss = testing::ResetPeakRss();
  auto image = ReadDicomSeries({MakeCt(spec)});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("only 2 frames"), std::string::npos) << image.status();
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{256} << 20);
}

// A series whose frames together exceed the voxel limit, counted before any
// per-frame work.
TEST(DicomHostileTest, SeriesTotalIsCheckedAgainstTheVoxelLimit) {
  CtSpec spec;
  spec.frames = 3;
  spec.per_frame_items = 3;
  spec.pixel_bytes = 4 * 4 * 2 * 3;
  DicomSeriesOptions options;
  options.max_voxels = 40;  // 3 frames of 16 voxels = 48
  auto image = ReadDicomSeries({MakeCt(spec)}, options);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kResourceExhausted) << image.status();
  options.max_voxels = 48;
  image = ReadDicomSeries({MakeCt(spec)}, options);
  EXPECT_TRUE(image.ok()) << image.status();
}

CtSpec Ct64() {
  CtSpec spec;
  spec.rows = spec.cols = 64;
  spec.pixel_bytes = 64 * 64 * 2;
  return spec;
}

// The control for the two below: the same file, honestly encoded, reads.
TEST(DicomHostileTest, HonestlyCompressedFilesRead) {
  for (E_TransferSyntax xfer : {EXS_RLELossless, EXS_JPEGProcess14SV1}) {
    auto image = ReadDicomSeries({Reencode(MakeCt(Ct64()), xfer, [](DcmDataset*) {})});
    ASSERT_TRUE(image.ok()) << DcmXfer(xfer).getXferName() << ": " << image.status();
    EXPECT_EQ(image->volume.voxels[100], 7 + 7 * 256);
  }
}

// DCMTK's decoders size their output from BitsAllocated: 65528 bits claimed
// by a small RLE file cost 8191 bytes per pixel before the layout was checked
// (536 MB for 256 x 256). The layout is now checked before decoding.
TEST(DicomHostileTest, AnImpossiblePixelLayoutIsRefusedBeforeDecoding) {
  CtSpec spec = Ct64();
  spec.rows = spec.cols = 256;
  spec.pixel_bytes = 256 * 256 * 2;
  const std::string file =
      Reencode(MakeCt(spec), EXS_RLELossless, [](DcmDataset* ds) { ds->putAndInsertUint16(DCM_BitsAllocated, 65528); });
  const int64_t rss = testing::ResetPeakRss();
  auto image = ReadDicomSeries({file});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("unsupported pixel layout"), std::string::npos) << image.status();
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
}

// A JPEG frame header claiming 65000 x 65000 inside a 64 x 64 image: DCMTK's
// decoder sized its buffers from it (a 7 KB progressive JPEG cost 8 GiB and
// 34 s). Refused from the header, before DCMTK decodes.
TEST(DicomHostileTest, AJpegFrameLargerThanTheImageIsRefusedBeforeDecoding) {
  std::string file = Reencode(MakeCt(Ct64()), EXS_JPEGProcess14SV1, [](DcmDataset*) {});
  const size_t sof = file.find("\xFF\xC3");  // lossless, Huffman: SOF3
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) file.replace(at, 2, "\xFD\xE8");  // 65000
  const int64_t rss = testing::ResetPeakRss();
  auto image = ReadDicomSeries({file});
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("frame header says 65000 x 65000"), std::string::npos) << image.status();
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
}

// ReadDicomSeries of one file with a reserve callback that grants, or
// refuses, everything asked: the result, the bytes asked for, the growth of
// the peak RSS meanwhile.
struct Reserved {
  absl::StatusOr<DicomImage> image;
  int64_t asked = 0;
  int64_t rss_growth = 0;
};
Reserved ReadReserving(const std::string& file, bool grant) {
  Reserved r{absl::UnknownError("not read")};
  DicomSeriesOptions options;
  options.reserve = [&](int64_t bytes) {
    r.asked += bytes;
    return grant ? absl::OkStatus() : absl::ResourceExhaustedError("over the test's limit");
  };
  const int64_t rss = testing::ResetPeakRss();
  r.image = ReadDicomSeries({file}, options);
  r.rss_growth = testing::PeakRssBytes() - rss;
  return r;
}

// A deflated file is read whole (DCMTK has no lazy reading through its
// inflater): 64 KB on the wire held 64 MiB, and 32 such files in a request
// held 32 GB before anything was admitted. The inflated bytes are counted
// without keeping them and reserved before anything inflates them.
TEST(DicomHostileTest, ADeflatedFileReservesWhatItInflatesTo) {
  constexpr int64_t kZeros = int64_t{64} << 20;
  const std::string file = testing::DeflatedWithZeros(MakeCt({}), kZeros);
  ASSERT_FALSE(file.empty());
  EXPECT_LT(file.size(), 1u << 20);
  auto held = DicomBytesHeldWhole(file);
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_GT(*held, kZeros);
  EXPECT_EQ(*DicomBytesHeldWhole(MakeCt({})), 0);  // read lazily

  Reserved refused = ReadReserving(file, /*grant=*/false);
  EXPECT_EQ(refused.image.status().code(), absl::StatusCode::kResourceExhausted) << refused.image.status();
  EXPECT_EQ(refused.asked, 2 * *held);  // DCMTK's copy and the structure check's
  EXPECT_LT(refused.rss_growth, int64_t{16} << 20);

  Reserved granted = ReadReserving(file, /*grant=*/true);  // within the limit: reads
  ASSERT_TRUE(granted.image.ok()) << granted.image.status();
  EXPECT_EQ(granted.image->volume.voxels[0], 7 + 7 * 256);
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Issue 28: 40,000 elements in descending tag order (320 KB) kept DCMTK's
// sorted insertion busy for about 8 s (80,000: 42 s) before anything was
// admitted. Refused by the structure walk, naming the order.
TEST(DicomHostileTest, DescendingTagsAreRefusedBeforeDcmtkSortsThem) {
  const std::string file = testing::Part10(testing::EmptyElements(40000, /*descending=*/true));
  const auto start = std::chrono::steady_clock::now();
  auto image = ReadDicomSeries({file});
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("tags must ascend"), std::string::npos) << image.status();
  EXPECT_NE(image.status().message().find("file #1"), std::string::npos) << image.status();
}

// Issue 28: 8 million empty elements in 64 MB raised the server's RSS by
// 1.4 GiB inside DCMTK while 64 MiB were admitted. Refused at the limit per
// data set, before DCMTK (or the in-memory file) holds anything of them.
TEST(DicomHostileTest, MillionsOfTinyElementsAreRefusedBeforeDcmtkHoldsThem) {
  const std::string file = testing::Part10(testing::EmptyElements(8000000, false));
  ASSERT_EQ(file.size(), 64000000u + 160u);
  const int64_t rss = testing::ResetPeakRss();
  const auto start = std::chrono::steady_clock::now();
  auto image = ReadDicomSeries({file});
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("limit per data set"), std::string::npos) << image.status();
}

// Within the limits, DCMTK's heap for the elements is reserved before it
// parses: a CT slice carrying 60,000 extra private elements (480 KB, about
// 11 MiB inside DCMTK) asks for DcmtkParseBytes of all its elements, and a
// refusal there leaves DCMTK unused; granted, the slice reads as before.
TEST(DicomHostileTest, ElementsAreReservedAtTheirCostBeforeDcmtkParses) {
  std::string file = MakeCt({});
  const size_t pixel_data = file.find(std::string("\xe0\x7f\x10\x00", 4));
  ASSERT_NE(pixel_data, std::string::npos);
  file.insert(pixel_data, testing::EmptyElements(60000, false, 0x7001));
  const auto cost = CheckDicomStructure(file, 64 * 1024);  // the reader's lazy-load length
  ASSERT_TRUE(cost.ok()) << cost.status();
  EXPECT_GT(cost->elements, 60000);
  EXPECT_GT(cost->loaded_value_bytes, 0);  // the header's values

  Reserved refused = ReadReserving(file, /*grant=*/false);
  EXPECT_EQ(refused.image.status().code(), absl::StatusCode::kResourceExhausted) << refused.image.status();
  EXPECT_EQ(refused.asked, cost->elements * kDcmtkBytesPerElement + cost->loaded_value_bytes);
  EXPECT_LT(refused.rss_growth, int64_t{8} << 20);

  Reserved granted = ReadReserving(file, /*grant=*/true);
  ASSERT_TRUE(granted.image.ok()) << granted.image.status();
  EXPECT_EQ(granted.asked, cost->elements * kDcmtkBytesPerElement + cost->loaded_value_bytes);
  EXPECT_EQ(granted.image->volume.voxels[0], 7 + 7 * 256);
}

// Values of up to 64 KiB are loaded as DCMTK parses (longer ones stay in
// the file): 1,100 of them before the pixel data, within the element caps,
// put 72 MB in DCMTK's heap beyond what the reservation counted. Refused by
// the walk, before the in-memory file or DCMTK holds anything.
TEST(DicomHostileTest, ManySmallValuesBeforeThePixelsAreRefusedBeforeDcmtkLoadsThem) {
  std::string file = MakeCt({});
  const size_t pixel_data = file.find(std::string("\xe0\x7f\x10\x00", 4));
  ASSERT_NE(pixel_data, std::string::npos);
  file.insert(pixel_data, testing::SmallValues(1100, 64 * 1024, 0x7001));
  const int64_t rss = testing::ResetPeakRss();
  const auto start = std::chrono::steady_clock::now();
  auto image = ReadDicomSeries({file});
  EXPECT_LT(SecondsSince(start), 1.0);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{32} << 20);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << image.status();
  EXPECT_NE(image.status().message().find("bytes of values short enough to be loaded"), std::string::npos)
      << image.status();
}

// DCMTK and OpenJPEG cannot be interrupted: a read whose request has ended
// (a client gone, a deadline passed) stops at the next file, or before the
// next file's pixels, instead of decoding a whole series for nobody.
TEST(DicomHostileTest, AReadStopsAtTheNextFileOnceItsRequestHasEnded) {
  const std::vector<std::string> files(5, MakeCt({}));
  const std::vector<std::string_view> views(files.begin(), files.end());
  int asked = 0, parsed = 0;
  DicomSeriesOptions options;
  options.reserve = [&](int64_t) {
    ++parsed;  // once per file, before DCMTK parses it
    return absl::OkStatus();
  };
  options.cancelled = [&] { return ++asked > 2; };  // the request ends after two files
  auto image = ReadDicomSeries(views, options);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kCancelled) << image.status();
  EXPECT_EQ(parsed, 2);

  // Ended once the series is known: its pixels are not decoded.
  bool admitted = false;
  asked = 0;
  options.admit = [&](const Geometry&) {
    admitted = true;
    return absl::OkStatus();
  };
  options.cancelled = [&] { return ++asked > 1; };  // after the one file is parsed
  image = ReadDicomSeries({files[0]}, options);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kCancelled) << image.status();
  EXPECT_TRUE(admitted);
}

}  // namespace
}  // namespace upp::imageio
