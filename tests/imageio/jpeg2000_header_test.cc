// ReadJpeg2000Header reads what OpenJPEG reads (pydicom's JPEG 2000 files,
// and codestreams and JP2 files OpenJPEG's encoder wrote with tiles, levels
// and code-blocks of several sizes), and DecodeJpeg2000Frame refuses, before
// OpenJPEG allocates, headers over its bounds (issue 28: an 82-byte
// codestream of 65,280 tiles cost 633 MB inside opj_read_header).
#include "imageio/jpeg2000_header.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <dcmtk/dcmdata/dctk.h>
#include <gtest/gtest.h>
#include <openjpeg.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "imageio/jpeg2000.h"
#include "tests/testing/hostile_jpeg2000.h"
#include "tests/testing/rss.h"

namespace upp::imageio {
namespace {

constexpr char kTestFiles[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files";

using testing::Codestream;
using testing::Layout;

// OpenJPEG's encoder into memory.
struct Sink {
  std::string bytes;
  size_t pos = 0;
};
OPJ_SIZE_T Write(void* data, OPJ_SIZE_T n, void* user) {
  auto* sink = static_cast<Sink*>(user);
  if (sink->bytes.size() < sink->pos + n) sink->bytes.resize(sink->pos + n);
  std::memcpy(&sink->bytes[sink->pos], data, n);
  sink->pos += n;
  return n;
}
OPJ_OFF_T SkipOut(OPJ_OFF_T n, void* user) {
  static_cast<Sink*>(user)->pos += static_cast<size_t>(n);
  return n;
}
OPJ_BOOL SeekOut(OPJ_OFF_T n, void* user) {
  static_cast<Sink*>(user)->pos = static_cast<size_t>(n);
  return OPJ_TRUE;
}

// A `width` x `height` 12-bit ramp, encoded losslessly by OpenJPEG.
std::string Encode(const Layout& l, bool jp2) {
  opj_cparameters_t p;
  opj_set_default_encoder_parameters(&p);
  p.tcp_numlayers = 1;
  p.tcp_rates[0] = 0;
  p.cp_disto_alloc = 1;
  p.numresolution = l.levels + 1;
  p.cblockw_init = 1 << (l.xcb + 2);
  p.cblockh_init = 1 << (l.ycb + 2);
  if (l.tile_width != l.width || l.tile_height != l.height) {
    p.tile_size_on = OPJ_TRUE;
    p.cp_tdx = static_cast<int>(l.tile_width);
    p.cp_tdy = static_cast<int>(l.tile_height);
  }
  opj_image_cmptparm_t c{};
  c.dx = c.dy = 1;
  c.w = l.width;
  c.h = l.height;
  c.prec = 12;
  std::unique_ptr<opj_image_t, decltype(&opj_image_destroy)> image(opj_image_create(1, &c, OPJ_CLRSPC_GRAY),
                                                                   &opj_image_destroy);
  image->x1 = l.width;
  image->y1 = l.height;
  for (uint32_t i = 0; i < l.width * l.height; ++i) image->comps[0].data[i] = static_cast<OPJ_INT32>(i % 4096);
  std::unique_ptr<opj_codec_t, decltype(&opj_destroy_codec)> codec(
      opj_create_compress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K), &opj_destroy_codec);
  std::unique_ptr<opj_stream_t, decltype(&opj_stream_destroy)> stream(opj_stream_create(1 << 16, OPJ_FALSE),
                                                                      &opj_stream_destroy);
  Sink sink;
  opj_stream_set_user_data(stream.get(), &sink, nullptr);
  opj_stream_set_write_function(stream.get(), &Write);
  opj_stream_set_skip_function(stream.get(), &SkipOut);
  opj_stream_set_seek_function(stream.get(), &SeekOut);
  if (!opj_setup_encoder(codec.get(), &p, image.get()) || !opj_start_compress(codec.get(), image.get(), stream.get()) ||
      !opj_encode(codec.get(), stream.get()) || !opj_end_compress(codec.get(), stream.get()))
    return {};
  return sink.bytes;
}

struct Memory {
  std::string_view bytes;
  size_t pos = 0;
};
OPJ_SIZE_T Read(void* dst, OPJ_SIZE_T n, void* user) {
  auto* m = static_cast<Memory*>(user);
  if (m->pos >= m->bytes.size()) return static_cast<OPJ_SIZE_T>(-1);
  const size_t k = std::min<size_t>(n, m->bytes.size() - m->pos);
  std::memcpy(dst, m->bytes.data() + m->pos, k);
  m->pos += k;
  return k;
}
OPJ_OFF_T SkipIn(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<Memory*>(user);
  const size_t k = std::min<size_t>(static_cast<size_t>(n), m->bytes.size() - std::min(m->pos, m->bytes.size()));
  m->pos += k;
  return static_cast<OPJ_OFF_T>(k);
}
OPJ_BOOL SeekIn(OPJ_OFF_T n, void* user) {
  auto* m = static_cast<Memory*>(user);
  if (static_cast<size_t>(n) > m->bytes.size()) return OPJ_FALSE;
  m->pos = static_cast<size_t>(n);
  return OPJ_TRUE;
}

// OpenJPEG's own reading of the main header, to compare with ours.
void ExpectSameAsOpenJpeg(std::string_view data, const std::string& name) {
  auto ours = ReadJpeg2000Header(data);
  ASSERT_TRUE(ours.ok()) << name << ": " << ours.status();
  Memory memory{data};
  std::unique_ptr<opj_stream_t, decltype(&opj_stream_destroy)> stream(opj_stream_create(1 << 16, OPJ_TRUE),
                                                                      &opj_stream_destroy);
  opj_stream_set_user_data(stream.get(), &memory, nullptr);
  opj_stream_set_user_data_length(stream.get(), data.size());
  opj_stream_set_read_function(stream.get(), &Read);
  opj_stream_set_skip_function(stream.get(), &SkipIn);
  opj_stream_set_seek_function(stream.get(), &SeekIn);
  const bool jp2 = data.size() > 8 && data.substr(4, 4) == "jP  ";
  std::unique_ptr<opj_codec_t, decltype(&opj_destroy_codec)> codec(
      opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K), &opj_destroy_codec);
  opj_dparameters_t p;
  opj_set_default_decoder_parameters(&p);
  ASSERT_TRUE(opj_setup_decoder(codec.get(), &p));
  opj_image_t* raw = nullptr;
  ASSERT_TRUE(opj_read_header(stream.get(), codec.get(), &raw)) << name;
  std::unique_ptr<opj_image_t, decltype(&opj_image_destroy)> image(raw, &opj_image_destroy);
  opj_codestream_info_v2_t* info = opj_get_cstr_info(codec.get());
  EXPECT_EQ(ours->width, static_cast<int64_t>(image->x1 - image->x0)) << name;
  EXPECT_EQ(ours->height, static_cast<int64_t>(image->y1 - image->y0)) << name;
  EXPECT_EQ(ours->tiles, static_cast<int64_t>(info->tw) * info->th) << name;
  EXPECT_EQ(ours->components, static_cast<int>(info->nbcomps)) << name;
  EXPECT_EQ(ours->precision, static_cast<int>(image->comps[0].prec)) << name;
  EXPECT_EQ(ours->is_signed, image->comps[0].sgnd != 0) << name;
  const opj_tccp_info_t& tccp = info->m_default_tile_info.tccp_info[0];
  EXPECT_EQ(ours->decomposition_levels, static_cast<int>(tccp.numresolutions) - 1) << name;
  EXPECT_EQ(ours->code_block_width, 1 << tccp.cblkw) << name;
  EXPECT_EQ(ours->code_block_height, 1 << tccp.cblkh) << name;
  opj_destroy_cstr_info(&info);
}

// The first fragment of the first frame of an encapsulated DICOM file.
std::string FirstFragment(const std::string& path) {
  DcmFileFormat file;
  if (file.loadFile(path.c_str()).bad()) return {};
  DcmElement* element = nullptr;
  if (file.getDataset()->findAndGetElement(DCM_PixelData, element).bad()) return {};
  DcmPixelSequence* sequence = nullptr;
  E_TransferSyntax xfer = file.getDataset()->getOriginalXfer();
  const DcmRepresentationParameter* parameters = nullptr;
  if (static_cast<DcmPixelData*>(element)->getEncapsulatedRepresentation(xfer, parameters, sequence).bad()) return {};
  DcmPixelItem* item = nullptr;
  Uint8* bytes = nullptr;
  if (sequence->getItem(item, 1).bad() || item->getUint8Array(bytes).bad()) return {};
  return std::string(reinterpret_cast<char*>(bytes), item->getLength());
}

TEST(Jpeg2000HeaderTest, ReadsWhatOpenJpegReadsFromPydicomsFiles) {
  if (!std::filesystem::exists(kTestFiles)) GTEST_SKIP() << "python3-pydicom test data not installed";
  int read = 0;
  for (const char* name : {"693_J2KI.dcm", "GDCMJ2K_TextGBR.dcm", "J2K_pixelrep_mismatch.dcm", "JPEG2000.dcm",
                           "MR_small_jp2klossless.dcm"}) {
    const std::string codestream = FirstFragment(std::string(kTestFiles) + "/" + name);
    if (codestream.empty()) continue;
    ExpectSameAsOpenJpeg(codestream, name);
    ++read;
  }
  EXPECT_GE(read, 4);
}

TEST(Jpeg2000HeaderTest, ReadsWhatOpenJpegReadsFromItsEncoder) {
  const Layout layouts[] = {
      {64, 48, 64, 48, 1, 5, 4, 4},  // one tile, OpenJPEG's defaults
      {64, 64, 16, 16, 1, 2, 2, 4},  // 16 tiles, 16 x 64 code-blocks
      {40, 30, 32, 16, 1, 3, 3, 3},  // partial tiles at the edges: 2 x 2
  };
  for (const Layout& l : layouts) {
    for (bool jp2 : {false, true}) {
      const std::string encoded = Encode(l, jp2);
      ASSERT_FALSE(encoded.empty());
      const std::string name = std::to_string(l.width) + "x" + std::to_string(l.height) + (jp2 ? " jp2" : " j2k");
      ExpectSameAsOpenJpeg(encoded, name);
      auto frame = DecodeJpeg2000Frame(reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size(),
                                       static_cast<int>(l.height), static_cast<int>(l.width));
      ASSERT_TRUE(frame.ok()) << name << ": " << frame.status();
      EXPECT_EQ(frame->values[static_cast<size_t>(l.width) * l.height - 1],
                static_cast<int32_t>((l.width * l.height - 1) % 4096))
          << name;
    }
  }
  auto h = ReadJpeg2000Header(Encode(layouts[1], false));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tiles, 16);
  EXPECT_EQ(h->code_block_width, 16);
  EXPECT_EQ(h->code_block_height, 64);
  EXPECT_EQ(h->decomposition_levels, 2);
}

// Issue 28: 256 x 255 samples in 1 x 1 tiles, 82 bytes, made OpenJPEG
// allocate 633 MB (and spend 1.5 s) inside opj_read_header.
TEST(Jpeg2000HeaderTest, ManyTilesAreRefusedBeforeOpenJpegAllocates) {
  Layout l;
  l.width = 256;
  l.height = 255;
  l.tile_width = l.tile_height = 1;
  const std::string bomb = Codestream(l);
  EXPECT_LE(bomb.size(), 82u);
  auto h = ReadJpeg2000Header(bomb);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->tiles, 65280);
  const int64_t rss = testing::ResetPeakRss();
  const auto start = std::chrono::steady_clock::now();
  auto frame = DecodeJpeg2000Frame(reinterpret_cast<const uint8_t*>(bomb.data()), bomb.size(), 255, 256);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  EXPECT_LT(testing::PeakRssBytes() - rss, int64_t{64} << 20);
  EXPECT_EQ(frame.status().code(), absl::StatusCode::kInvalidArgument) << frame.status();
  EXPECT_NE(frame.status().message().find("65280 tiles, over the limit of 1024"), std::string::npos) << frame.status();
}

absl::Status DecodeStatus(const std::string& codestream, int rows, int cols) {
  return DecodeJpeg2000Frame(reinterpret_cast<const uint8_t*>(codestream.data()), codestream.size(), rows, cols)
      .status();
}

// Each bound, named in the refusal, before OpenJPEG sees the codestream.
TEST(Jpeg2000HeaderTest, HeadersOverABoundAreRefusedNamingIt) {
  struct Case {
    Layout layout;
    int columns;
    absl::StatusCode code;
    const char* named;
  };
  const Case cases[] = {
      {{16, 16, 16, 16, 1, 17, 4, 4},
       16,
       absl::StatusCode::kInvalidArgument,
       "17 decomposition levels, over the limit of 16"},
      {{16, 16, 16, 16, 1, 33, 4, 4},
       16,
       absl::StatusCode::kInvalidArgument,
       "33 decomposition levels (T.800: at most 32)"},
      {{16, 16, 16, 16, 1, 0, 9, 4}, 16, absl::StatusCode::kInvalidArgument, "code-blocks of 2^11 x 2^6"},
      {{16, 16, 16, 16, 1, 0, 5, 4},
       16,
       absl::StatusCode::kInvalidArgument,
       "2^7 x 2^6 samples (T.800: 4 to 1024 a side, at most 4096)"},
      {{16, 16, 16, 16, 16384, 0, 4, 4}, 16, absl::StatusCode::kUnimplemented, "16384 components (grayscale only)"},
      {{16, 16, 16, 16, 1, 0, 4, 4},
       17,
       absl::StatusCode::kInvalidArgument,
       "frame is 16 x 16, the DICOM header says 17 x 16"},
  };
  for (const Case& c : cases) {
    const absl::Status s = DecodeStatus(Codestream(c.layout), 16, c.columns);
    EXPECT_EQ(s.code(), c.code) << s;
    EXPECT_NE(s.message().find(c.named), std::string::npos) << s;
  }
  EXPECT_TRUE(ReadJpeg2000Header(Codestream({16, 16, 32, 32})).ok());  // a tile larger than the image: one tile
}

TEST(Jpeg2000HeaderTest, MalformedHeadersAreRefused) {
  const std::string good = Codestream(Layout());
  ASSERT_TRUE(ReadJpeg2000Header(good).ok());
  auto refused = [](const std::string& s, const char* why) {
    auto h = ReadJpeg2000Header(s);
    EXPECT_EQ(h.status().code(), absl::StatusCode::kInvalidArgument) << why;
    EXPECT_NE(h.status().message().find(why), std::string::npos) << h.status();
  };
  refused(good.substr(1), "no SOC and SIZ");
  refused(good.substr(0, 30), "runs past the data");
  refused(good.substr(0, 45), "ends before its first tile part");  // SOC and SIZ only
  std::string no_cod = good.substr(0, 45) + good.substr(45 + 14);
  refused(no_cod, "no COD");
  std::string empty_tile = good;
  empty_tile[6 + 18] = empty_tile[6 + 19] = empty_tile[6 + 20] = empty_tile[6 + 21] = 0;  // XTsiz 0
  refused(empty_tile, "an empty tile");
  refused(std::string("\x00\x00\x00\x0cjP  \r\n\x87\n", 12) + std::string("\x00\x00\x00\x08"
                                                                          "ftyp",
                                                                          8),
          "without a codestream box");
  refused(std::string("\x00\x00\x00\x0cjP  \r\n\x87\n", 12) + std::string("\x00\x01\x00\x00jp2c", 8),
          "a JP2 box runs past");
}

}  // namespace
}  // namespace upp::imageio
