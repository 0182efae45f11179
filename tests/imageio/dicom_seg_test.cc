// DICOM SEG written by WriteDicomSeg, read back with DCMTK's own dcmseg: every
// frame carries the right segment, sits at its source slice's position and
// holds exactly that segment's voxels. (test_dicom_vs_pydicom.py reads SEGs
// of multi-slice series with pydicom and validates them with dciodvfy.)
#include "imageio/dicom_seg.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmfg/fgplanpo.h>
#include <dcmtk/dcmfg/fgseg.h>
#include <dcmtk/dcmseg/segdoc.h>
#include <dcmtk/dcmseg/segment.h>
#include <dcmtk/dcmseg/segutils.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <set>

#include "imageio/dicom.h"
#include "imageio/file_util.h"

namespace upp::imageio {
namespace {

// pydicom's CT_small.dcm, a real CT slice that Debian's python3-pydicom ships.
constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

TEST(DicomSegTest, FramesReadBackWithDcmtkLandOnTheirSliceWithTheirVoxels) {
  const auto ct = ReadWholeFile(kCtSmall);
  if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
  const std::string& bytes = *ct;
  auto image = ReadDicomSeries({bytes});
  ASSERT_TRUE(image.ok()) << image.status();
  const auto& g = image->volume.geometry;
  // Labels: 1 where HU > 100, 2 where HU < -500, 0 elsewhere; label 3 is absent.
  std::vector<uint16_t> labels(image->volume.voxels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    const float v = image->volume.voxels[i];
    labels[i] = v > 100 ? 1 : (v < -500 ? 2 : 0);
  }
  std::vector<LabelInfo> segments{{1, "bone", {255, 255, 200}}, {2, "air", {0, 0, 255}}, {3, "absent", {255, 0, 0}}};
  auto seg_bytes =
      WriteDicomSeg(g, labels, image->info, bytes, segments, {"UNETR++ ct", "0.1.0", "weights_sha256=ab12"});
  ASSERT_TRUE(seg_bytes.ok()) << seg_bytes.status();

  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(seg_bytes->data(), static_cast<offile_off_t>(seg_bytes->size()));
  stream.setEos();
  file.transferInit();
  const OFCondition read = file.read(stream);
  file.transferEnd();
  ASSERT_TRUE(read.good()) << read.text();
  DcmSegmentation* raw = nullptr;
  ASSERT_TRUE(DcmSegmentation::loadDataset(*file.getDataset(), raw).good());
  std::unique_ptr<DcmSegmentation> seg(raw);

  // Two non-empty segments on one slice: two frames; the absent label has none.
  ASSERT_EQ(seg->getNumberOfFrames(), 2u);
  std::set<Uint16> seen;
  for (Uint32 f = 0; f < 2; ++f) {
    auto* segfg = static_cast<FGSegmentation*>(seg->getFunctionalGroups().get(f, DcmFGTypes::EFG_SEGMENTATION));
    auto* pos = static_cast<FGPlanePosPatient*>(seg->getFunctionalGroups().get(f, DcmFGTypes::EFG_PLANEPOSPATIENT));
    ASSERT_NE(segfg, nullptr);
    ASSERT_NE(pos, nullptr);
    Uint16 number = 0;
    ASSERT_TRUE(segfg->getReferencedSegmentNumber(number).good());
    seen.insert(number);
    Float64 x, y, z;
    ASSERT_TRUE(pos->getImagePositionPatient(x, y, z).good());
    EXPECT_NEAR(x, g.origin[0], 1e-4);
    EXPECT_NEAR(y, g.origin[1], 1e-4);
    EXPECT_NEAR(z, g.origin[2], 1e-4);
    std::unique_ptr<DcmIODTypes::Frame> unpacked(DcmSegUtils::unpackBinaryFrame(
        seg->getFrame(f), static_cast<Uint16>(g.size[1]), static_cast<Uint16>(g.size[0])));
    ASSERT_NE(unpacked, nullptr);
    const uint16_t label = number;  // segment numbers follow the order of `segments`
    int64_t mismatches = 0;
    for (size_t p = 0; p < labels.size(); ++p) {
      mismatches += (unpacked->pixData[p] != 0) != (labels[p] == label);
    }
    EXPECT_EQ(mismatches, 0) << "segment " << number;
  }
  EXPECT_EQ(seen, (std::set<Uint16>{1, 2}));
  OFString name;
  ASSERT_NE(seg->getSegment(1), nullptr);
  seg->getSegment(1)->getSegmentLabel(name);
  EXPECT_EQ(std::string(name.c_str()), "bone");
  // Every segment names the model and version that made it.
  for (Uint16 number : {1, 2}) {
    ASSERT_NE(seg->getSegment(number), nullptr) << number;
    auto& algorithm = seg->getSegment(number)->getSegmentationAlgorithmIdentification();
    OFString value;
    EXPECT_TRUE(algorithm.getAlgorithmName(value).good());
    EXPECT_EQ(std::string(value.c_str()), "UNETR++ ct");
    EXPECT_TRUE(algorithm.getAlgorithmVersion(value).good());
    EXPECT_EQ(std::string(value.c_str()), "0.1.0");
    EXPECT_TRUE(algorithm.getAlgorithmParameters(value).good());
    EXPECT_EQ(std::string(value.c_str()), "weights_sha256=ab12");
    algorithm.getAlgorithmFamilyCode().getCodeValue(value);
    EXPECT_EQ(std::string(value.c_str()), "123110");
    seg->getSegment(number)->getSegmentAlgorithmName(value);
    EXPECT_EQ(std::string(value.c_str()), "UNETR++ ct");
  }
}

// A model name of the 64 characters the server allows, after "UNETR++ ",
// is longer than an Algorithm Name (LO) holds: the SEG is still written,
// the name clipped to 64 characters and a backslash (a value separator)
// left out.
TEST(DicomSegTest, ALongModelNameIsClippedNotRefused) {
  const auto ct = ReadWholeFile(kCtSmall);
  if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
  auto image = ReadDicomSeries({*ct});
  ASSERT_TRUE(image.ok()) << image.status();
  std::vector<uint16_t> labels(image->volume.voxels.size(), 1);
  const std::string model = "a\\" + std::string(61, 'm') + "z";  // 64 characters
  auto seg_bytes = WriteDicomSeg(image->volume.geometry, labels, image->info, *ct, {{1, "all", {1, 2, 3}}},
                                 {"UNETR++ " + model, "1", ""});
  ASSERT_TRUE(seg_bytes.ok()) << seg_bytes.status();
  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(seg_bytes->data(), static_cast<offile_off_t>(seg_bytes->size()));
  stream.setEos();
  file.transferInit();
  ASSERT_TRUE(file.read(stream).good());
  file.transferEnd();
  DcmSegmentation* raw = nullptr;
  ASSERT_TRUE(DcmSegmentation::loadDataset(*file.getDataset(), raw).good());
  std::unique_ptr<DcmSegmentation> seg(raw);
  ASSERT_NE(seg->getSegment(1), nullptr);
  const std::string expected = "UNETR++ a" + std::string(55, 'm');
  ASSERT_EQ(expected.size(), 64u);
  EXPECT_EQ(DicomAlgorithmName("UNETR++ " + model), expected);
  OFString value;
  EXPECT_TRUE(seg->getSegment(1)->getSegmentationAlgorithmIdentification().getAlgorithmName(value).good());
  EXPECT_EQ(std::string(value.c_str()), expected);
  seg->getSegment(1)->getSegmentAlgorithmName(value);
  EXPECT_EQ(std::string(value.c_str()), expected);
}

TEST(DicomSegTest, MismatchedInputsAreRefused) {
  Geometry g;
  g.size = {2, 2, 1};
  DicomSeriesInfo info;
  info.sop_instance_uids = {"1.2.3"};
  auto r = WriteDicomSeg(g, std::vector<uint16_t>(3, 0), info, "", {{1, "x", {}}}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = WriteDicomSeg(g, std::vector<uint16_t>(4, 0), info, "", {}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = WriteDicomSeg(g, std::vector<uint16_t>(4, 0), info, "not dicom", {{1, "x", {}}}, {});
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace upp::imageio
