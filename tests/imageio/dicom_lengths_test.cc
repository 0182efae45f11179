// CheckDicomStructure accepts every file of pydicom's test data that DCMTK
// reads, and refuses elements, items and fragments that claim more bytes than
// the file holds, tags out of order within a data set, and more elements
// than the limits, before DCMTK allocates anything.
#include "imageio/dicom_lengths.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "imageio/dicom.h"
#include "imageio/file_util.h"
#include "tests/testing/hostile_dicom.h"
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
    const absl::Status s = CheckDicomStructure(Read(e.path())).status();
    EXPECT_TRUE(s.ok()) << e.path() << ": " << s;
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(DicomLengthsTest, RefusesClaimsBeyondTheFile) {
  const std::string ct = Read(std::string(kTestFiles) + "/CT_small.dcm");
  if (ct.empty()) GTEST_SKIP() << "python3-pydicom test data not installed";
  ASSERT_TRUE(CheckDicomStructure(ct).ok());
  // Truncated: pixel data claims more than is left.
  auto s = CheckDicomStructure(ct.substr(0, ct.size() - 1000)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("(7FE0,0010)"), std::string::npos) << s;
  // A 4-byte length patched to ~4 GB in an element of the data set.
  const size_t at = ct.find(std::string("\xe0\x7f\x10\x00OW", 6));
  ASSERT_NE(at, std::string::npos);
  std::string patched = ct;
  const uint32_t huge = 0xFFFFFFF0u;
  std::memcpy(&patched[at + 8], &huge, 4);
  s = CheckDicomStructure(patched).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("4294967280"), std::string::npos) << s;
  // ReadDicomSeries refuses it the same way, naming the file's index.
  auto series = ReadDicomSeries({patched});
  EXPECT_EQ(series.status().code(), absl::StatusCode::kInvalidArgument);
  // A tiny file claiming a huge sequence item.
  std::string tiny(132, '\0');
  std::memcpy(&tiny[128], "DICM", 4);
  tiny += std::string("\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\x00\x00\x00\x40", 20);
  s = CheckDicomStructure(tiny).status();
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
  EXPECT_TRUE(CheckDicomStructure(file + deflate_raw(fine)).ok());
  const std::string hostile = element("\x09\x00\x10\x00OB", 0xF0000000u) + "abcd";
  const absl::Status s = CheckDicomStructure(file + deflate_raw(hostile)).status();
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
// (The fuzzer appended it to a CT slice; alone here, since after the pixel
// data its tag would now be refused as out of order first.)
TEST(DicomLengthsTest, UnknownUpperCaseVrHasALongLength) {
  const std::string file =
      testing::Part10(std::string("\xa4\x54\x4d\x4dMM\x00\x00\x4d\x4d\xa4\xa4", 12) + std::string(64, 'x'));
  const absl::Status s = CheckDicomStructure(file).status();
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
// The fuzzer's file has tags out of order too, now refused first; the chain
// below keeps them ascending: each sequence's defined length covers only its
// item's header, each item claims the rest of the file, so each level walks
// the rest twice (once inside its item, once as its parent's next element).
TEST(DicomLengthsTest, OverlappingContainersAreRefusedWithinABudget) {
  const std::string found = Read(UPP_REGRESSIONS_DIR "/dicom/slow-overlapping-containers");
  ASSERT_FALSE(found.empty());
  EXPECT_EQ(CheckDicomStructure(found).status().code(), absl::StatusCode::kInvalidArgument);

  std::string chain;
  for (int level = 0; level < 30; ++level) {
    testing::PutLe(chain, 0x0009, 2);
    testing::PutLe(chain, 0x1000 + level, 2);
    chain += "SQ";
    testing::PutLe(chain, 0, 2);
    testing::PutLe(chain, 8, 4);            // the sequence: its item's header
    testing::PutLe(chain, 0xE000FFFEu, 4);  // the item: the rest of the file
    testing::PutLe(chain, 0x7FFFFFFFu, 4);
  }
  const absl::Status s = CheckDicomStructure(testing::Part10(chain)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("overlap"), std::string::npos) << s;
}

// PS3.5 7.1: tags ascend within a data set. DCMTK sorts what it reads by
// searching from the end of each data set's list, so descending tags made
// its parse quadratic; the walk refuses them, naming the two tags. Each
// item, and the file meta group, is a data set of its own.
TEST(DicomLengthsTest, TagsMustAscendWithinEachDataSet) {
  auto s = CheckDicomStructure(testing::Part10(testing::EmptyElements(3, /*descending=*/true))).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("(1001,0001) follows (1001,0002)"), std::string::npos) << s;
  EXPECT_NE(s.message().find("ascend"), std::string::npos) << s;

  const std::string twice = testing::EmptyElements(1, false) + testing::EmptyElements(1, false);
  s = CheckDicomStructure(testing::Part10(twice)).status();
  EXPECT_NE(s.message().find("(1001,0000) repeats (1001,0000)"), std::string::npos) << s;

  // An item's first tag (1001,0000) is below its sequence's (1003,0000).
  const std::string nested =
      testing::EmptyElements(2, false) +
      testing::SequenceOf(0x1003, 0x0000, std::vector<std::string>{testing::EmptyElements(2, false)});
  auto n = CheckDicomStructure(testing::Part10(nested));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->elements, 1 + 2 + 1 + 1 + 2);  // meta, two elements, the sequence, its item, two elements

  // The meta group's own order.
  std::string meta = testing::Part10("");
  meta += meta.substr(132);  // (0002,0010) again
  s = CheckDicomStructure(meta).status();
  EXPECT_NE(s.message().find("(0002,0010) repeats (0002,0010)"), std::string::npos) << s;
}

// Each element, item and fragment is an object of about 200 bytes in DCMTK:
// counted, and bounded per data set and per instance, before it parses.
TEST(DicomLengthsTest, ElementsAreCountedAndBounded) {
  auto n = CheckDicomStructure(testing::Part10(testing::EmptyElements(kMaxDicomElementsPerDataSet - 1, false)));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->elements, kMaxDicomElementsPerDataSet);  // with the meta group's one
  auto s = CheckDicomStructure(testing::Part10(testing::EmptyElements(kMaxDicomElementsPerDataSet + 1, false)));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("more than 65536 elements (the limit per data set"), std::string::npos)
      << s.status();

  // Items under the per-data-set limit, together over the per-instance one.
  const std::vector<std::string> items(9, testing::EmptyElements(60000, false));
  s = CheckDicomStructure(testing::Part10(testing::SequenceOf(0x0009, 0x1000, items)));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("more than 524288 elements, items and fragments (the limit per instance"),
            std::string::npos)
      << s.status();
  const std::vector<std::string> fewer(8, testing::EmptyElements(60000, false));
  n = CheckDicomStructure(testing::Part10(testing::SequenceOf(0x0009, 0x1000, fewer)));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(n->elements, 1 + 1 + 8 * (1 + 60000));
  EXPECT_EQ(n->loaded_value_bytes, 20);  // the transfer syntax UID; the US elements are empty
  EXPECT_EQ(DcmtkParseBytes(*n), n->elements * kDcmtkBytesPerElement + 20);
  EXPECT_EQ(DcmtkParseBytes({int64_t{1} << 62, 0}), INT64_MAX);  // unformable: over every limit
  EXPECT_EQ(DcmtkParseBytes({1, INT64_MAX}), INT64_MAX);
}

// The values DCMTK loads as it parses (those no longer than the reader's
// lazy-load length) are summed and bounded: 300,000 values of 240 bytes,
// within the element caps, would put 72 MB of them in DCMTK's heap besides
// the elements' 86 MB. Longer values stay in the file and do not count, nor
// does the top-level pixel data.
TEST(DicomLengthsTest, ValuesDcmtkLoadsAreCountedAndBounded) {
  const std::vector<std::string> items(5, testing::SmallValues(60000, 240));
  const std::string file = testing::Part10(testing::SequenceOf(0x0009, 0x1000, items));
  auto s = CheckDicomStructure(file, 256);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
  EXPECT_NE(s.status().message().find("more than 67108864 bytes of values short enough to be loaded"),
            std::string::npos)
      << s.status();
  EXPECT_EQ(CheckDicomStructure(file).status().code(), absl::StatusCode::kInvalidArgument);  // all loaded
  auto lazy = CheckDicomStructure(file, 128);  // every value stays in the file
  ASSERT_TRUE(lazy.ok()) << lazy.status();
  EXPECT_EQ(lazy->loaded_value_bytes, 20);

  std::string pixels;  // (7FE0,0010) OB of 1000 bytes at the top level
  testing::PutLe(pixels, 0x7FE0, 2);
  testing::PutLe(pixels, 0x0010, 2);
  pixels += "OB";
  testing::PutLe(pixels, 0, 2);
  testing::PutLe(pixels, 1000, 4);
  pixels.append(1000, '\0');
  auto counted = CheckDicomStructure(testing::Part10(testing::SmallValues(3, 100) + pixels), 4096);
  ASSERT_TRUE(counted.ok()) << counted.status();
  EXPECT_EQ(counted->elements, 1 + 3 + 1);
  EXPECT_EQ(counted->loaded_value_bytes, 20 + 3 * 100);
}

}  // namespace
}  // namespace upp::imageio
