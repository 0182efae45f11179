// The TID 1500 volume report, read back with DCMTK's dcmsr: one volumetric
// group per SEG segment, its volume, the referenced SEG and segment, the
// source series, patient and study from the source; and the refusals.
#include "gateway/report.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <vector>

#include "imageio/dcmtk_io.h"
#include "imageio/dicom.h"
#include "imageio/dicom_seg.h"
#include "imageio/file_util.h"
#include "tests/testing/hostile_dicom.h"

namespace upp::gateway {
namespace {

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

struct Fixture {
  std::string ct, seg;
  imageio::DicomSeriesInfo info;
};

// pydicom's CT slice and a two-segment SEG of it (bone, air).
std::optional<Fixture> MakeFixture() {
  auto ct = imageio::ReadWholeFile(kCtSmall);
  if (!ct.ok()) return std::nullopt;
  auto image = imageio::ReadDicomSeries({*ct});
  if (!image.ok()) return std::nullopt;
  std::vector<uint16_t> labels(image->volume.voxels.size());
  for (size_t i = 0; i < labels.size(); ++i)
    labels[i] = image->volume.voxels[i] > 100 ? 1 : (image->volume.voxels[i] < -500 ? 2 : 0);
  auto seg = imageio::WriteDicomSeg(image->volume.geometry, labels, image->info, *ct,
                                    {{1, "bone", {255, 255, 200}}, {2, "air", {0, 0, 255}}}, {"UNETR++", "1"});
  if (!seg.ok()) return std::nullopt;
  return Fixture{*ct, *seg, image->info};
}

// The source instance as the spool holds it: a file.
std::string SourceFile(const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/report-test-source.dcm";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

ReportInput InputFor(const Fixture& f, std::map<std::string, double> volumes) {
  ReportInput input;
  input.seg = f.seg;
  input.source_path = SourceFile(f.ct);
  input.source_series_uid = f.info.series_instance_uid;
  input.volume_ml_by_segment_label = std::move(volumes);
  return input;
}

std::string Get(DcmItem& item, const DcmTagKey& tag) {
  OFString v;
  item.findAndGetOFStringArray(tag, v, OFTrue);
  return v.c_str();
}

TEST(ReportTest, OneVolumeGroupPerSegmentReferencingTheSegAndTheSource) {
  auto f = MakeFixture();
  if (!f) GTEST_SKIP() << "python3-pydicom test data not installed";
  auto sr = WriteVolumeReport(InputFor(*f, {{"bone", 12.3456}, {"air", 0.5}, {"unused", 7}}));
  ASSERT_TRUE(sr.ok()) << sr.status();

  DcmFileFormat file, seg_file, ct_file;
  ASSERT_TRUE(imageio::ParseDicom(*sr, file).ok());
  ASSERT_TRUE(imageio::ParseDicom(f->seg, seg_file).ok());
  ASSERT_TRUE(imageio::ParseDicom(f->ct, ct_file).ok());
  DcmDataset& d = *file.getDataset();
  EXPECT_EQ(Get(d, DCM_SOPClassUID), UID_EnhancedSRStorage);
  EXPECT_EQ(Get(d, DCM_StudyInstanceUID), Get(*ct_file.getDataset(), DCM_StudyInstanceUID));
  EXPECT_EQ(Get(d, DCM_PatientID), Get(*ct_file.getDataset(), DCM_PatientID));
  EXPECT_NE(Get(d, DCM_SeriesInstanceUID), f->info.series_instance_uid);

  DSRDocument doc;
  ASSERT_TRUE(doc.read(d).good());
  DSRDocumentTree& tree = doc.getTree();
  // Volumes by tracking identifier, walking the tree in order.
  std::map<std::string, std::string> volumes;
  std::string tracking;
  int referenced_segments = 0, source_series = 0;
  if (tree.gotoRoot() > 0) {
    do {
      const DSRContentItem& item = tree.getCurrentContentItem();
      const std::string code = item.getConceptName().getCodeValue().c_str();
      if (code == "112039") tracking = item.getStringValue().c_str();
      if (code == "118565006") {
        volumes[tracking] = item.getNumericValue().getNumericValue().c_str();
        EXPECT_EQ(item.getNumericValue().getMeasurementUnit().getCodeValue(), "cm3");
      }
      if (code == "121191") {  // Referenced Segment
        ++referenced_segments;
        EXPECT_EQ(item.getImageReference().getSOPInstanceUID(), Get(*seg_file.getDataset(), DCM_SOPInstanceUID));
      }
      if (code == "121232") {  // Source series for segmentation
        ++source_series;
        EXPECT_EQ(item.getStringValue(), f->info.series_instance_uid.c_str());
      }
    } while (tree.iterate() > 0);
  }
  EXPECT_EQ(volumes, (std::map<std::string, std::string>{{"bone", "12.346"}, {"air", "0.500"}}));
  EXPECT_EQ(referenced_segments, 2);
  EXPECT_EQ(source_series, 2);
  // The SEG is the report's evidence.
  OFString study, series, sop_class, sop_instance;
  ASSERT_TRUE(doc.getCurrentRequestedProcedureEvidence().gotoFirstItem().good());
  doc.getCurrentRequestedProcedureEvidence().getSOPInstanceUID(sop_instance);
  EXPECT_EQ(sop_instance, Get(*seg_file.getDataset(), DCM_SOPInstanceUID).c_str());
}

// Each volume names the algorithm that measured it (TID 4019): the model,
// the version the server ran and the weights' checksum.
TEST(ReportTest, EachVolumeNamesTheModelVersionThatMeasuredIt) {
  auto f = MakeFixture();
  if (!f) GTEST_SKIP() << "python3-pydicom test data not installed";
  ReportInput input = InputFor(*f, {{"bone", 1}, {"air", 2}});
  input.algorithm_name = "UNETR++ ct";
  input.algorithm_version = "2";
  input.algorithm_parameters = "weights_sha256=ab12";
  auto sr = WriteVolumeReport(input);
  ASSERT_TRUE(sr.ok()) << sr.status();
  DcmFileFormat file;
  ASSERT_TRUE(imageio::ParseDicom(*sr, file).ok());
  DSRDocument doc;
  ASSERT_TRUE(doc.read(*file.getDataset()).good());
  DSRDocumentTree& tree = doc.getTree();
  std::map<std::string, std::vector<std::string>> by_code;  // DCM concept code: values
  if (tree.gotoRoot() > 0) {
    do {
      const DSRContentItem& item = tree.getCurrentContentItem();
      const std::string code = item.getConceptName().getCodeValue().c_str();
      if (code == "111001" || code == "111003" || code == "111002")
        by_code[code].push_back(item.getStringValue().c_str());
    } while (tree.iterate() > 0);
  }
  using Values = std::vector<std::string>;
  EXPECT_EQ(by_code["111001"], (Values{"UNETR++ ct", "UNETR++ ct"})) << "Algorithm Name, one per volume";
  EXPECT_EQ(by_code["111003"], (Values{"2", "2"})) << "Algorithm Version";
  EXPECT_EQ(by_code["111002"], (Values{"weights_sha256=ab12", "weights_sha256=ab12"})) << "Algorithm Parameters";

  // Without a model named (an older server), no identification is made up.
  input.algorithm_name.clear();
  sr = WriteVolumeReport(input);
  ASSERT_TRUE(sr.ok()) << sr.status();
  EXPECT_EQ(sr->find("UNETR++ ct"), std::string::npos);
}

// "UNETR++ " and a model name of the 64 characters the server allows: each
// Algorithm Name is clipped as the SEG's is (imageio::DicomAlgorithmName),
// so that the report names the algorithm exactly as its SEG does.
TEST(ReportTest, ALongModelNameIsClippedNotRefused) {
  auto f = MakeFixture();
  if (!f) GTEST_SKIP() << "python3-pydicom test data not installed";
  ReportInput input = InputFor(*f, {{"bone", 1}, {"air", 2}});
  input.algorithm_name = "UNETR++ " + std::string(64, 'm');
  input.algorithm_version = "2";
  auto sr = WriteVolumeReport(input);
  ASSERT_TRUE(sr.ok()) << sr.status();
  DcmFileFormat file;
  ASSERT_TRUE(imageio::ParseDicom(*sr, file).ok());
  DSRDocument doc;
  ASSERT_TRUE(doc.read(*file.getDataset()).good());
  DSRDocumentTree& tree = doc.getTree();
  std::vector<std::string> names;
  if (tree.gotoRoot() > 0) {
    do {
      const DSRContentItem& item = tree.getCurrentContentItem();
      if (item.getConceptName().getCodeValue() == "111001") names.push_back(item.getStringValue().c_str());
    } while (tree.iterate() > 0);
  }
  const std::string clipped = "UNETR++ " + std::string(56, 'm');
  EXPECT_EQ(names, (std::vector<std::string>{clipped, clipped})) << "Algorithm Name, one per volume";
}

TEST(ReportTest, RefusesASegmentWithoutVolumeAndInputsThatAreNotDicom) {
  auto f = MakeFixture();
  if (!f) GTEST_SKIP() << "python3-pydicom test data not installed";
  ReportInput input = InputFor(*f, {{"bone", 1}});
  auto r = WriteVolumeReport(input);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("no volume for SEG segment 2"), std::string::npos) << r.status();
  input.seg = "not dicom";
  EXPECT_EQ(WriteVolumeReport(input).status().code(), absl::StatusCode::kInvalidArgument);
}

// The source instance comes from the sender (the first of the series): its
// structure is walked before DCMTK parses it, so a slice carrying tags in
// descending order (quadratic for DCMTK) is refused at once, by name.
TEST(ReportTest, ASourceInstanceWithTagsOutOfOrderIsRefusedBeforeItParses) {
  auto f = MakeFixture();
  if (!f) GTEST_SKIP() << "python3-pydicom test data not installed";
  ReportInput input = InputFor(*f, {{"bone", 1}, {"air", 2}});
  const std::string hostile = f->ct + testing::EmptyElements(40000, /*descending=*/true);  // after its last element
  input.source_path = SourceFile(hostile);
  const auto start = std::chrono::steady_clock::now();
  auto r = WriteVolumeReport(input);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  EXPECT_NE(r.status().message().find("the source instance: DICOM: element"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("tags must ascend"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace upp::gateway
