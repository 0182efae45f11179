// NIfTI reader: hand-made headers with known answers, and every kind of bad
// input giving a clear status without a crash or a large allocation.
// (tests/preprocessing/test_nifti_vs_nibabel.py checks real files against nibabel.)
#include "imageio/nifti.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/escaping.h"

namespace upp::imageio {
namespace {

// A single-file NIfTI-1 image (little endian), header fields settable.
struct Nifti1Builder {
  std::string header = std::string(352, '\0');
  std::string data;

  Nifti1Builder() {
    Put<int32_t>(0, 348);
    std::memcpy(&header[344], "n+1", 4);
    Put<float>(108, 352);  // vox_offset
    Put<float>(76, 1.0f);  // pixdim[0] (qfac)
  }
  template <typename T>
  void Put(size_t offset, T v) {
    std::memcpy(&header[offset], &v, sizeof(T));
  }
  void Dims(std::initializer_list<int16_t> dims) {
    Put<int16_t>(40, static_cast<int16_t>(dims.size()));
    int i = 1;
    for (int16_t d : dims) Put<int16_t>(40 + 2 * i++, d);
  }
  void Type(int16_t datatype, int16_t bitpix) {
    Put<int16_t>(70, datatype);
    Put<int16_t>(72, bitpix);
  }
  void Spacing(float x, float y, float z) {
    Put<float>(80, x);
    Put<float>(84, y);
    Put<float>(88, z);
  }
  void Sform(const float rows[3][4]) {
    Put<int16_t>(254, 1);
    for (int r = 0; r < 3; ++r) {
      for (int c = 0; c < 4; ++c) Put<float>(280 + 16 * r + 4 * c, rows[r][c]);
    }
  }
  std::string Bytes() const { return header + data; }
};

std::string Gzip(const std::string& in) {
  z_stream zs{};
  deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, in.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = in.size();
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = out.size();
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

Nifti1Builder Int16Cube() {
  Nifti1Builder b;
  b.Dims({3, 2, 2});
  b.Type(4, 16);
  b.Spacing(2, 3, 4);
  for (int16_t v = 0; v < 12; ++v) b.data.append(reinterpret_cast<const char*>(&v), 2);
  return b;
}

TEST(NiftiTest, ReadsVoxelsInXFastestOrderWithScaling) {
  auto b = Int16Cube();
  b.Put<float>(112, 2.0f);   // scl_slope
  b.Put<float>(116, -1.0f);  // scl_inter
  auto img = ReadNifti(b.Bytes());
  ASSERT_TRUE(img.ok()) << img.status();
  const auto& v = img->volume;
  EXPECT_EQ(v.geometry.size, (std::array<int64_t, 3>{3, 2, 2}));
  EXPECT_EQ(v.channels, 1);
  // value(x, y, z) = 2 * (x + 3y + 6z) - 1
  EXPECT_FLOAT_EQ(v.At(0, 0, 0, 0), -1);
  EXPECT_FLOAT_EQ(v.At(0, 2, 0, 0), 3);
  EXPECT_FLOAT_EQ(v.At(0, 1, 1, 1), 2 * 10 - 1);
  // No sform/qform: pixdim only, identity RAS, i.e. LPS direction diag(-1, -1, 1).
  EXPECT_EQ(v.geometry.spacing, (std::array<double, 3>{2, 3, 4}));
  EXPECT_EQ(v.geometry.direction, (std::array<double, 9>{-1, 0, 0, 0, -1, 0, 0, 0, 1}));
}

TEST(NiftiTest, SformIsConvertedFromRasToLps) {
  auto b = Int16Cube();
  const float rows[3][4] = {{0, 0, -4, 10}, {2, 0, 0, 20}, {0, 3, 0, 30}};
  b.Sform(rows);
  auto img = ReadNifti(Gzip(b.Bytes()));  // and through gzip
  ASSERT_TRUE(img.ok()) << img.status();
  const auto& g = img->volume.geometry;
  EXPECT_EQ(g.spacing, (std::array<double, 3>{2, 3, 4}));
  EXPECT_EQ(g.origin, (std::array<double, 3>{-10, -20, 30}));
  // Columns: i -> RAS +y -> LPS -y; j -> RAS +z; k -> RAS -x -> LPS +x.
  EXPECT_EQ(g.direction, (std::array<double, 9>{0, 0, 1, -1, 0, 0, 0, 1, 0}));
  auto p = g.IndexToPhysical({1, 1, 1});
  EXPECT_DOUBLE_EQ(p[0], -10 + 4);
  EXPECT_DOUBLE_EQ(p[1], -20 - 2);
  EXPECT_DOUBLE_EQ(p[2], 30 + 3);
}

TEST(NiftiTest, TruncatedDataIsRefused) {
  auto b = Int16Cube();
  b.data.resize(b.data.size() - 1);
  auto img = ReadNifti(b.Bytes());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("truncated"), std::string::npos) << img.status();
  img = ReadNifti(Gzip(b.Bytes()));
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  img = ReadNifti(b.Bytes().substr(0, 200));
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NiftiTest, HugeDimensionsInATinyFileAllocateNothing) {
  Nifti1Builder b;
  b.Dims({32767, 32767, 32767});
  b.Type(64, 64);
  auto img = ReadNifti(b.Bytes());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kResourceExhausted) << img.status();
  // Under the voxel limit but far beyond the bytes present: refused before any allocation.
  b.Dims({1000, 1000, 1000});
  NiftiReadOptions more;
  more.max_voxels = int64_t{1} << 31;
  img = ReadNifti(b.Bytes(), more);
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("truncated"), std::string::npos);
  // The same through gzip: only the header is inflated.
  img = ReadNifti(Gzip(b.Bytes()), more);
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NiftiTest, NonPositiveDimensionsAreRefused) {
  auto b = Int16Cube();
  b.Dims({3, 0, 2});
  EXPECT_EQ(ReadNifti(b.Bytes()).status().code(), absl::StatusCode::kInvalidArgument);
  b.Dims({3, -2, 2});
  EXPECT_EQ(ReadNifti(b.Bytes()).status().code(), absl::StatusCode::kInvalidArgument);
  b.Put<int16_t>(40, 9);  // dim[0] out of range
  EXPECT_EQ(ReadNifti(b.Bytes()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NiftiTest, BadSpacingAndShearedOrientationAreRefused) {
  auto b = Int16Cube();
  b.Spacing(std::numeric_limits<float>::quiet_NaN(), 1, 1);
  auto img = ReadNifti(b.Bytes());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("spacing"), std::string::npos) << img.status();
  b.Spacing(0, 1, 1);
  EXPECT_EQ(ReadNifti(b.Bytes()).status().code(), absl::StatusCode::kInvalidArgument);
  auto s = Int16Cube();
  const float sheared[3][4] = {{1, 0.5f, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}};
  s.Sform(sheared);
  img = ReadNifti(s.Bytes());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(img.status().message().find("orthonormal"), std::string::npos) << img.status();
}

TEST(NiftiTest, UnsupportedContentIsNamed) {
  auto b = Int16Cube();
  b.Type(32, 64);  // complex64
  auto img = ReadNifti(b.Bytes());
  EXPECT_EQ(img.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(img.status().message().find("datatype 32"), std::string::npos);
  auto f = Int16Cube();
  f.Dims({3, 2, 2, 1, 2});
  EXPECT_EQ(ReadNifti(f.Bytes()).status().code(), absl::StatusCode::kUnimplemented);
  auto pair = Int16Cube();
  std::memcpy(&pair.header[344], "ni1", 4);
  img = ReadNifti(pair.Bytes());
  EXPECT_NE(img.status().message().find(".hdr/.img"), std::string::npos);
}

TEST(NiftiTest, NotNiftiAndCorruptGzipAreRefused) {
  EXPECT_EQ(ReadNifti(std::string(400, 'x')).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadNifti("").status().code(), absl::StatusCode::kInvalidArgument);
  std::string gz = Gzip(Int16Cube().Bytes());
  gz[gz.size() / 2] ^= 0x5a;
  gz[gz.size() / 2 + 1] ^= 0x5a;
  auto img = ReadNifti(gz);
  EXPECT_FALSE(img.ok());
  EXPECT_EQ(ReadNiftiFile("/nonexistent.nii").status().code(), absl::StatusCode::kNotFound);
}

// Images of a MiB or more are inflated in one piece (libdeflate); unusual
// gzip files take the streaming path. Both must give the same answers.
TEST(NiftiTest, LargeGzipImagesAndUnusualGzipFiles) {
  Nifti1Builder b;
  b.Dims({128, 96, 50});
  b.Type(4, 16);
  b.Spacing(1, 1, 2);
  for (int64_t i = 0; i < 128 * 96 * 50; ++i) {
    const int16_t v = static_cast<int16_t>((i * 7919) % 3001 - 1000);
    b.data.append(reinterpret_cast<const char*>(&v), 2);
  }
  const std::string plain = b.Bytes();
  auto expected = ReadNifti(plain);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_GT(plain.size(), size_t{1} << 20);
  // One member.
  auto one = ReadNifti(Gzip(plain));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->volume.voxels, expected->volume.voxels);
  // Two members (what concatenated gzip files or some writers produce).
  const size_t half = plain.size() / 2;
  auto two = ReadNifti(Gzip(plain.substr(0, half)) + Gzip(plain.substr(half)));
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->volume.voxels, expected->volume.voxels);
  // Bytes after the image inside the stream.
  auto trailing = ReadNifti(Gzip(plain + std::string(5000, 'z')));
  ASSERT_TRUE(trailing.ok()) << trailing.status();
  EXPECT_EQ(trailing->volume.voxels, expected->volume.voxels);
  // A cut stream: "truncated", as without gzip; a damaged one: refused.
  const std::string gz = Gzip(plain);
  auto cut = ReadNifti(gz.substr(0, gz.size() * 2 / 3));
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(cut.status().message().find("truncated"), std::string::npos) << cut.status();
  std::string damaged = gz;
  for (size_t i = gz.size() / 3; i < gz.size() / 3 + 64; ++i) damaged[i] ^= 0x5a;
  EXPECT_FALSE(ReadNifti(damaged).ok());
}

// A read whose request has ended (NiftiReadOptions::cancelled) stops
// within a chunk of inflating or converting, instead of decoding a large
// image for nobody: 128 MiB of int16 voxels (kept small by gzip, 128 KB)
// are two chunks to inflate and four to convert; cancelled at the third
// question, the read asks no fourth and ends CANCELLED. The same without
// gzip: cancelled at the second of the four conversion chunks.
TEST(NiftiTest, ACancelledReadStopsWithinAChunk) {
  Nifti1Builder b;
  b.Dims({512, 512, 256});
  b.Type(4, 16);
  b.Spacing(1, 1, 1);
  b.data.assign(size_t{512} * 512 * 256 * 2, '\0');
  const std::string plain = b.Bytes();
  const std::string gz = Gzip(plain);
  ASSERT_LT(gz.size(), size_t{1} << 20);
  for (const std::string* file : {&gz, &plain}) {
    int asked = 0;
    NiftiReadOptions options;
    options.cancelled = [&] {
      ++asked;
      return false;
    };
    auto whole = ReadNifti(*file, options);
    ASSERT_TRUE(whole.ok()) << whole.status();
    const int whole_asked = asked;
    EXPECT_GE(whole_asked, file == &gz ? 2 + 4 : 4);  // at least one question per chunk

    const int stop_at = file == &gz ? 3 : 2;
    asked = 0;
    options.cancelled = [&] { return ++asked >= stop_at; };
    auto cancelled = ReadNifti(*file, options);
    EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled) << cancelled.status();
    EXPECT_EQ(asked, stop_at);  // nothing more once it said so
    EXPECT_LT(asked, whole_asked);
  }
}

// A small .nii.gz whose header promises far more than its compressed bytes
// can hold is refused without allocating what the header claims (found by
// the fuzzer: a 200-byte file made the reader allocate exabytes and abort).
TEST(NiftiTest, GzipHeaderPromisingTooMuchIsRefusedCheaply) {
  Nifti1Builder b = Int16Cube();
  b.Put<float>(108, 1e18f);  // vox_offset: an exabyte into a file of a few hundred bytes
  auto img = ReadNifti(Gzip(b.Bytes()));
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument) << img.status();
  Nifti1Builder big;
  big.Dims({1024, 1024, 1024});  // 2^30 voxels (the default limit) of float64: 8 GiB
  big.Type(64, 64);
  big.Spacing(1, 1, 1);
  big.data.assign(4096, '\0');
  img = ReadNifti(Gzip(big.Bytes()));
  EXPECT_EQ(img.status().code(), absl::StatusCode::kInvalidArgument) << img.status();
  EXPECT_NE(img.status().message().find("truncated"), std::string::npos) << img.status();
  // The fuzzer's input itself (deploy/fuzz.sh, 2026-11-26): it aborted in
  // std::string's constructor before the fix.
  std::string crash;
  ASSERT_TRUE(absl::Base64Unescape(
      "H4sIACjf12MC/4thZCAKMDOxMLAysDowQiGqJiYGDrBAgz0DAwg7OAC5QAzjw+gNzhAxsOJBQDDhcQPIzegA7C8MQXQBED9P2xAi/J+BAYLA"
      "XCATISaqzCYGDrBAgz0DAwg7OAC5QAzjw+gNzhAxsOJBQDDhcQPIzegA7C8MQXQHERAI4YLFIVygGFQQlQKrQ1IO0QvSAARoaGhoaGhoBxEQ"
      "CPQAhkHsAQAA",
      &crash));
  EXPECT_FALSE(ReadNifti(crash).ok());
}

TEST(NiftiTest, FourthDimensionBecomesChannels) {
  Nifti1Builder b;
  b.Dims({2, 2, 1, 3});
  b.Type(16, 32);
  b.Spacing(1, 1, 1);
  for (int i = 0; i < 12; ++i) {
    float v = static_cast<float>(i);
    b.data.append(reinterpret_cast<const char*>(&v), 4);
  }
  auto img = ReadNifti(b.Bytes());
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->volume.channels, 3);
  EXPECT_EQ(img->volume.geometry.size, (std::array<int64_t, 3>{2, 2, 1}));
  EXPECT_FLOAT_EQ(img->volume.At(2, 1, 1, 0), 11);
}

// Int16Cube with an oblique sform (axes permuted, spacing 2, 3, 4 mm).
Nifti1Builder ObliqueCube() {
  auto b = Int16Cube();
  const float rows[3][4] = {{0, 0, -4, 10}, {2, 0, 0, 20}, {0, 3, 0, 30}};
  b.Sform(rows);
  return b;
}

TEST(NiftiWriterTest, LabelMapRoundTripKeepsGeometryAndValues) {
  auto in = ReadNifti(ObliqueCube().Bytes());
  ASSERT_TRUE(in.ok()) << in.status();
  for (uint16_t top : {uint16_t{200}, uint16_t{1000}}) {
    std::vector<uint16_t> labels(12);
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<uint16_t>(i * top / 11);
    auto bytes = WriteNiftiLabels(in->volume.geometry, labels, in->header);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto back = ReadNifti(*bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->header.datatype, top > 255 ? 512 : 2);
    EXPECT_EQ(back->header.sform_code, 1);
    const auto& g0 = in->volume.geometry;
    const auto& g1 = back->volume.geometry;
    EXPECT_EQ(g1.size, g0.size);
    for (int i = 0; i < 3; ++i) {
      EXPECT_NEAR(g1.spacing[i], g0.spacing[i], 1e-6);
      EXPECT_NEAR(g1.origin[i], g0.origin[i], 1e-6);
    }
    for (int i = 0; i < 9; ++i) EXPECT_NEAR(g1.direction[i], g0.direction[i], 1e-6);
    for (size_t i = 0; i < labels.size(); ++i) EXPECT_EQ(back->volume.voxels[i], labels[i]);
  }
}

TEST(NiftiWriterTest, QformAloneReproducesTheGeometry) {
  auto in = ReadNifti(ObliqueCube().Bytes());
  ASSERT_TRUE(in.ok()) << in.status();
  NiftiHeaderInfo qform_only = in->header;
  qform_only.sform_code = 0;
  qform_only.qform_code = 1;
  auto bytes = WriteNiftiLabels(in->volume.geometry, std::vector<uint16_t>(12, 1), qform_only);
  ASSERT_TRUE(bytes.ok());
  auto back = ReadNifti(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  for (int i = 0; i < 9; ++i) {
    EXPECT_NEAR(back->volume.geometry.direction[i], in->volume.geometry.direction[i], 1e-6);
  }
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(back->volume.geometry.origin[i], in->volume.geometry.origin[i], 1e-5);
}

TEST(NiftiWriterTest, WideImagesUseNifti2AndSizeMismatchIsRefused) {
  Geometry g;
  g.size = {40000, 2, 1};
  auto bytes = WriteNiftiLabels(g, std::vector<uint16_t>(80000, 3), {});
  ASSERT_TRUE(bytes.ok());
  auto back = ReadNifti(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->header.version, 2);
  EXPECT_EQ(back->volume.geometry.size, g.size);
  auto bad = WriteNiftiLabels(g, std::vector<uint16_t>(5, 0), {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace upp::imageio
