// CheckDicomLengths accepts every file of pydicom's test data that DCMTK
// reads, and refuses elements, items and fragments that claim more bytes than
// the file holds, before DCMTK allocates anything.
#include "imageio/dicom_lengths.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "imageio/dicom.h"
#include "imageio/file_util.h"
#include "tests/testing/rss.h"

namespace upp::imageio {
namespace {

constexpr char kTestFiles[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files";

std::string Read(const std::filesystem::path& p) { return ReadWholeFile(p.string()).value_or(""); }

TEST(DicomLengthsTest, AcceptsEveryFileDcmtkReads) {
  if (!std::filesystem::exists(kTestFiles)) GTEST_SKIP() << "python3-pydicom test data not installed";
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
  int checked = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(kTestFiles)) {
    if (!e.is_regular_file() || e.file_size() > (64 << 20)) continue;
    DcmFileFormat file;
    if (file.loadFile(e.path().c_str()).bad()) continue;  // not DICOM, or unreadable for DCMTK too
    if (file.loadAllDataIntoMemory().bad()) continue;
    const absl::Status s = CheckDicomLengths(Read(e.path()));
    EXPECT_TRUE(s.ok()) << e.path() << ": " << s;
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(DicomLengthsTest, RefusesClaimsBeyondTheFile) {
  const std::string ct = Read(std::string(kTestFiles) + "/CT_small.dcm");
  if (ct.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  ASSERT_TRUE(CheckDicomLengths(ct).ok());
  // Truncated: pixel data claims more than is left.
  auto s = CheckDicomLengths(ct.substr(0, ct.size() - 1000));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("(7FE0,0010)"), std::string::npos) << s;
  // A 4-byte length patched to ~4 GB in an element of the data set.
  const size_t at = ct.find(std::string("\xe0\x7f\x10\x00OW", 6));
  ASSERT_NE(at, std::string::npos);
  std::string patched = ct;
  const uint32_t huge = 0xFFFFFFF0u;
  std::memcpy(&patched[at + 8], &huge, 4);
  s = CheckDicomLengths(patched);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("4294967280"), std::string::npos) << s;
  // ReadDicomSeries refuses it the same way, naming the file's index.
  auto series = ReadDicomSeries({patched});
  EXPECT_EQ(series.status().code(), absl::StatusCode::kInvalidArgument);
  // A tiny file claiming a huge sequence item.
  std::string tiny(132, '\0');
  std::memcpy(&tiny[128], "DICM", 4);
  tiny += std::string("\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x00\x00\x00\x40", 20);
  s = CheckDicomLengths(tiny);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(DicomLengthsTest, WalksDeflatedDataSetsAfterInflating) {
  // File meta declaring Deflated Explicit VR Little Endian, then a raw-deflated
  // data set whose one element claims ~4 GB (the fuzzer's find: DCMTK
  // inflates and allocates the claim).
  auto element = [](const char* tag_vr, uint32_t length) {
    std::string e(tag_vr, 6);
    e += std::string(2, '\0');
    e.append(reinterpret_cast<const char*>(&length), 4);
    return e;
  };
  const std::string ts = "1.2.840.10008.1.2.1.99";
  std::string file(128, '\0');
  file += "DICM";
  file += std::string("\x02\x00\x10\x00UI", 6);
  const uint16_t ts_len = static_cast<uint16_t>(ts.size());
  file.append(reinterpret_cast<const char*>(&ts_len), 2);
  file += ts;
  auto deflate_raw = [](const std::string& in) {
    z_stream z{};
    deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
    std::string out(in.size() + 1024, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z.avail_in = static_cast<uInt>(in.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    deflate(&z, Z_FINISH);
    out.resize(out.size() - z.avail_out);
    deflateEnd(&z);
    return out;
  };
  const std::string fine = element("\x09\x00\x10\x00OB", 4) + "abcd";
  EXPECT_TRUE(CheckDicomLengths(file + deflate_raw(fine)).ok());
  const std::string hostile = element("\x09\x00\x10\x00OB", 0xF0000000u) + "abcd";
  const absl::Status s = CheckDicomLengths(file + deflate_raw(hostile));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("(0009,0010)"), std::string::npos) << s;
}

// The walk must read every element's length field as DCMTK will: for each of
// the 65536 two-byte VRs, the walk's rule is DCMTK's own.
TEST(DicomLengthsTest, LengthFieldRuleIsDcmtksForEveryVr) {
  int long_form = 0;
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const char name[3] = {static_cast<char>(a), static_cast<char>(b), '\0'};
      const bool dcmtk = DcmVR(name).usesExtendedLengthEncoding();
      ASSERT_EQ(UsesLongLengthField(name[0], name[1]), dcmtk) << "VR bytes " << a << " " << b;
      long_form += dcmtk;
    }
  }
  EXPECT_GT(long_form, 600);  // 26 x 26 upper-case pairs less 21 short VRs, plus lt/ox/px
}

// The fuzzer's find (reduced): an unknown but upper-case VR "MM" has a 4-byte
// length for DCMTK; read with a 2-byte length, the walk saw a harmless short
// element while DCMTK allocated the 2.7 GB claimed in the next four bytes.
TEST(DicomLengthsTest, UnknownUpperCaseVrHasALongLength) {
  const std::string ct = Read(std::string(kTestFiles) + "/CT_small.dcm");
  if (ct.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  std::string file = ct + std::string("\xa4\x54\x4d\x4dMM\x00\x00\x4d\x4d\xa4\xa4", 12) + std::string(64, 'x');
  const absl::Status s = CheckDicomLengths(file);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("2762231117"), std::string::npos) << s;
  const int64_t rss = testing::ResetPeakRss();
  EXPECT_EQ(ReadDicomSeries({file}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
}

// The fuzzer's find: nested sequences and items whose defined lengths
// overrun their parents', so that each level walked the rest of the file
// again (6 s for 25 KB in a release build, exponential in the nesting). The
// walk now has a budget of element visits proportional to the file's size.
TEST(DicomLengthsTest, OverlappingContainersAreRefusedWithinABudget) {
  const std::string file = Read(UPP_REGRESSIONS_DIR "/dicom/slow-overlapping-containers");
  ASSERT_FALSE(file.empty());
  const absl::Status s = CheckDicomLengths(file);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("overlap"), std::string::npos) << s;
}

}  // namespace
}  // namespace upp::imageio
