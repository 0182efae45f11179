#include "imageio/jpeg_header.h"

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace upp::imageio {
namespace {

int Byte(std::string_view s, size_t at) { return static_cast<unsigned char>(s[at]); }
int Word(std::string_view s, size_t at) { return Byte(s, at) << 8 | Byte(s, at + 1); }

bool IsFrameHeader(int marker) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 of JPEG-LS.
  return (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) || marker == 0xF7;
}

bool StandsAlone(int marker) { return marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7); }  // TEM, RSTn

}  // namespace

absl::StatusOr<JpegFrameHeader> ReadJpegFrameHeader(std::string_view s) {
  if (s.size() < 2 || Byte(s, 0) != 0xFF || Byte(s, 1) != 0xD8)
    return absl::InvalidArgumentError("JPEG frame does not start with SOI");
  size_t at = 2;
  while (true) {
    while (at < s.size() && Byte(s, at) != 0xFF) ++at;  // tolerate junk between segments, as libjpeg does
    while (at < s.size() && Byte(s, at) == 0xFF) ++at;  // fill bytes
    if (at >= s.size()) break;
    const int marker = Byte(s, at++);
    if (StandsAlone(marker)) continue;
    if (marker == 0xD9 || marker == 0xDA) break;  // EOI or SOS before any frame header
    if (at + 2 > s.size()) break;
    const size_t length = Word(s, at);
    if (length < 2 || at + length > s.size())
      return absl::InvalidArgumentError(
          absl::StrCat("JPEG marker segment 0x", absl::Hex(marker), " runs past its data"));
    if (IsFrameHeader(marker)) {
      if (length < 8) return absl::InvalidArgumentError("JPEG frame header is too short");
      JpegFrameHeader h;
      h.marker = marker;
      h.precision = Byte(s, at + 2);
      h.rows = Word(s, at + 3);
      h.columns = Word(s, at + 5);
      h.components = Byte(s, at + 7);
      return h;
    }
    at += length;
  }
  return absl::InvalidArgumentError("JPEG frame has no frame header before its scan data");
}

}  // namespace upp::imageio
