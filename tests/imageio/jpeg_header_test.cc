// ReadJpegFrameHeader on hand-built marker sequences: which marker is a frame
// header, where the size fields are, and what is refused.
#include "imageio/jpeg_header.h"

#include <gtest/gtest.h>

#include <string>

namespace upp::imageio {
namespace {

std::string Segment(unsigned char marker, const std::string& payload) {
  const size_t length = payload.size() + 2;
  return std::string{'\xFF', static_cast<char>(marker), static_cast<char>(length >> 8),
                     static_cast<char>(length & 0xFF)} +
         payload;
}

// P=12, Y=0x0102 (258), X=0x0304 (772), Nf=1, one component spec.
const std::string kFramePayload("\x0C\x01\x02\x03\x04\x01\x01\x11\x00", 9);
const std::string kSoi("\xFF\xD8", 2);

TEST(JpegHeaderTest, ReadsTheFrameHeaderAfterOtherSegments) {
  const std::string jpeg = kSoi + Segment(0xE0, "JFIF\0") + Segment(0xC4, std::string(20, '\x01')) +
                           Segment(0xDB, std::string(65, '\x02')) + Segment(0xC1, kFramePayload);
  auto h = ReadJpegFrameHeader(jpeg);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->marker, 0xC1);  // not DHT (C4), whose number is in the SOF range
  EXPECT_EQ(h->precision, 12);
  EXPECT_EQ(h->rows, 258);
  EXPECT_EQ(h->columns, 772);
  EXPECT_EQ(h->components, 1);
}

TEST(JpegHeaderTest, ReadsJpegLsFrameHeaders) {
  auto h = ReadJpegFrameHeader(kSoi + Segment(0xF7, kFramePayload));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->marker, 0xF7);
  EXPECT_EQ(h->columns, 772);
}

TEST(JpegHeaderTest, SkipsFillBytesAndStandAloneMarkers) {
  auto h = ReadJpegFrameHeader(kSoi + std::string("\xFF\xFF\xFF\xD0", 4) + Segment(0xC0, kFramePayload));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->marker, 0xC0);
}

TEST(JpegHeaderTest, RefusesWhatIsNotAHeader) {
  EXPECT_FALSE(ReadJpegFrameHeader("").ok());
  EXPECT_FALSE(ReadJpegFrameHeader(Segment(0xC0, kFramePayload)).ok()) << "no SOI";
  EXPECT_FALSE(ReadJpegFrameHeader(kSoi + Segment(0xDA, "\x01\x01\x00\x00\x3F\x00")).ok()) << "scan before frame";
  EXPECT_FALSE(ReadJpegFrameHeader(kSoi + Segment(0xE0, "abc")).ok()) << "ends before a frame header";
  std::string truncated = kSoi + Segment(0xC0, kFramePayload);
  truncated.resize(truncated.size() - 3);
  auto h = ReadJpegFrameHeader(truncated);
  ASSERT_FALSE(h.ok());
  EXPECT_NE(h.status().message().find("runs past"), std::string::npos) << h.status();
  EXPECT_FALSE(ReadJpegFrameHeader(kSoi + Segment(0xC0, "\x08\x00\x10")).ok()) << "frame header too short";
}

}  // namespace
}  // namespace upp::imageio
