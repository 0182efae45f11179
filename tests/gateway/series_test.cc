#include "gateway/series.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "imageio/file_util.h"
#include "tests/testing/deflated_dicom.h"
#include "tests/testing/hostile_dicom.h"
#include "tests/testing/rss.h"

namespace upp::gateway {
namespace {

constexpr char kCtSmall[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm";

TEST(SeriesTest, OrientationNameFollowsTheSliceNormalWithinTenDegrees) {
  EXPECT_EQ(OrientationName({1, 0, 0, 0, 1, 0}), "axial");
  EXPECT_EQ(OrientationName({1, 0, 0, 0, 0, -1}), "coronal");
  EXPECT_EQ(OrientationName({0, 1, 0, 0, 0, -1}), "sagittal");
  const double c = std::cos(0.15), s = std::sin(0.15);  // 8.6 degrees: still axial
  EXPECT_EQ(OrientationName({1, 0, 0, 0, c, s}), "axial");
  const double c2 = std::cos(0.3), s2 = std::sin(0.3);  // 17 degrees
  EXPECT_EQ(OrientationName({1, 0, 0, 0, c2, s2}), "oblique");
  EXPECT_EQ(OrientationName({0, 0, 0, 0, 0, 0}), "oblique");
}

class SeriesDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("upp-series-test-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
  }
  std::filesystem::path dir_;
};

TEST_F(SeriesDirTest, SummarizesARealCtSlice) {
  auto ct = imageio::ReadWholeFile(kCtSmall);
  if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
  Write("a.dcm", *ct);
  auto s = SummarizeSeries(dir_.string(), {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->modality, "CT");
  EXPECT_EQ(s->files.size(), 1u);
  EXPECT_EQ(s->bytes, static_cast<int64_t>(ct->size()));
  EXPECT_FALSE(s->series_instance_uid.empty());
  EXPECT_FALSE(s->orientation.empty());
}

TEST_F(SeriesDirTest, LimitsAreCheckedBeforeAnyFileIsRead) {
  auto ct = imageio::ReadWholeFile(kCtSmall);
  if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
  Write("a.dcm", *ct);
  Write("b.dcm", "not DICOM at all");
  SeriesLimits few;
  few.max_instances = 1;
  EXPECT_EQ(SummarizeSeries(dir_.string(), few).status().code(), absl::StatusCode::kResourceExhausted);
  SeriesLimits small;
  small.max_bytes = static_cast<int64_t>(ct->size());
  EXPECT_EQ(SummarizeSeries(dir_.string(), small).status().code(), absl::StatusCode::kResourceExhausted);
  auto s = SummarizeSeries(dir_.string(), {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("instance 2"), std::string::npos) << s.status();
}

// Headers are read from a mapping of the file, lazily; a deflated instance is
// parsed whole, so its inflated size is what the limit applies to. Messages
// never carry the file's name (spooled files are named by their UID).
TEST_F(SeriesDirTest, ADeflatedInstanceIsMeasuredInflated) {
  auto ct = imageio::ReadWholeFile(kCtSmall);
  if (!ct.ok()) GTEST_SKIP() << "python3-pydicom test data not installed";
  const std::string deflated = testing::DeflatedWithZeros(*ct, size_t{8} << 20);
  ASSERT_FALSE(deflated.empty());
  Write("1.2.3.4.dcm", deflated);
  const std::string path = (dir_ / "1.2.3.4.dcm").string();
  auto h = ReadInstanceHeader(path, int64_t{4} << 20);  // the file is far smaller, its data set is not
  EXPECT_EQ(h.status().code(), absl::StatusCode::kResourceExhausted) << h.status();
  EXPECT_EQ(h.status().message().find("1.2.3.4"), std::string::npos) << h.status();
  h = ReadInstanceHeader(path, int64_t{16} << 20);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->modality, "CT");
  h = ReadInstanceHeader((dir_ / "9.9.9.dcm").string(), int64_t{16} << 20);  // no such file
  EXPECT_EQ(h.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.status().message().find("9.9.9"), std::string::npos) << h.status();
}

// Issue 28: every C-STORE is parsed by DCMTK here, so the structure walk
// comes first: tags out of order (DCMTK's insertion quadratic in them: 40,000
// took seconds) and millions of tiny elements (about 180 bytes of DCMTK heap
// each: 8 million in 64 MB held 1.4 GiB) are refused before DCMTK parses.
TEST_F(SeriesDirTest, AnInstanceDcmtkWouldChokeOnIsRefusedBeforeItParses) {
  Write("1.2.3.5.dcm", testing::Part10(testing::EmptyElements(40000, /*descending=*/true)));
  auto start = std::chrono::steady_clock::now();
  auto h = ReadInstanceHeader((dir_ / "1.2.3.5.dcm").string(), int64_t{1} << 30);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << h.status();
  EXPECT_NE(h.status().message().find("tags must ascend"), std::string::npos) << h.status();

  Write("1.2.3.6.dcm", testing::Part10(testing::EmptyElements(8000000, false)));
  const int64_t rss = testing::ResetPeakRss();
  h = ReadInstanceHeader((dir_ / "1.2.3.6.dcm").string(), int64_t{1} << 30);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << h.status();
  EXPECT_NE(h.status().message().find("limit per data set"), std::string::npos) << h.status();
}

// The header is read up to the pixel data with every value of up to 256
// bytes loaded: 300,000 of them (within the element caps) made DCMTK hold
// their 72 MB besides the elements' objects. Refused before DCMTK parses;
// what remains of the growth is the walk's pages of the mapped file.
TEST_F(SeriesDirTest, AnInstanceOfManySmallValuesIsRefusedBeforeDcmtkLoadsThem) {
  {
    const std::vector<std::string> items(5, testing::SmallValues(60000, 240));
    Write("1.2.3.7.dcm", testing::Part10(testing::SequenceOf(0x0009, 0x1000, items)));
  }
  const int64_t rss = testing::ResetPeakRss();
  const auto start = std::chrono::steady_clock::now();
  auto h = ReadInstanceHeader((dir_ / "1.2.3.7.dcm").string(), int64_t{1} << 30);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{96} << 20);
  EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << h.status();
  EXPECT_NE(h.status().message().find("bytes of values short enough to be loaded"), std::string::npos) << h.status();
}

}  // namespace
}  // namespace upp::gateway
