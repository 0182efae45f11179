#include "imageio/jpeg2000_header.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "imageio/checked_math.h"

namespace upp::imageio {
namespace {

constexpr uint32_t kSoc = 0xFF4F, kSiz = 0xFF51, kCod = 0xFF52, kCoc = 0xFF53, kSot = 0xFF90;
constexpr int64_t kMaxComponents = 16384;  // T.800 A.5.1: Csiz
constexpr int kMaxLevels = 32;             // T.800 A.6.1: SPcod decomposition levels

uint32_t U8(std::string_view s, size_t at) { return static_cast<unsigned char>(s[at]); }
uint32_t U16(std::string_view s, size_t at) { return U8(s, at) << 8 | U8(s, at + 1); }
int64_t U32(std::string_view s, size_t at) { return int64_t{U16(s, at)} << 16 | U16(s, at + 2); }

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("JPEG 2000 header: ", what));
}

bool IsJp2(std::string_view s) {
  static constexpr char kSignature[] = {0, 0, 0, 0x0c, 'j', 'P', ' ', ' '};
  return s.size() >= sizeof(kSignature) && std::memcmp(s.data(), kSignature, sizeof(kSignature)) == 0;
}

// The contents of a JP2 file's contiguous codestream box ('jp2c'; T.800
// I.4: boxes of 4-byte length, or 1 and an 8-byte length, or 0: to the end).
absl::StatusOr<std::string_view> Jp2Codestream(std::string_view s) {
  size_t at = 0;
  while (s.size() - at >= 8) {
    uint64_t length = static_cast<uint64_t>(U32(s, at));
    size_t header = 8;
    if (length == 1) {
      if (s.size() - at < 16) break;
      length = static_cast<uint64_t>(U32(s, at + 8)) << 32 | static_cast<uint64_t>(U32(s, at + 12));
      header = 16;
    } else if (length == 0) {
      length = s.size() - at;
    }
    if (length < header || length > s.size() - at) return Bad("a JP2 box runs past the data");
    if (s.substr(at + 4, 4) == "jp2c") return s.substr(at + header, length - header);
    at += length;
  }
  return Bad("a JP2 file without a codestream box");
}

// SIZ after its length: Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz,
// YTOsiz, Csiz, then Ssiz, XRsiz, YRsiz per component (T.800 A.5.1).
absl::Status ReadSiz(std::string_view s, Jpeg2000Header& h) {
  if (s.size() < 36) return Bad("SIZ is too short");
  const int64_t x = U32(s, 2), y = U32(s, 6), x0 = U32(s, 10), y0 = U32(s, 14);
  const int64_t tile_w = U32(s, 18), tile_h = U32(s, 22), tile_x0 = U32(s, 26), tile_y0 = U32(s, 30);
  const int64_t components = U16(s, 34);
  if (components < 1 || components > kMaxComponents)
    return Bad(absl::StrCat("SIZ declares ", components, " components"));
  if (static_cast<int64_t>(s.size()) < 36 + 3 * components) return Bad("SIZ is shorter than its components");
  if (x <= x0 || y <= y0) return Bad("SIZ declares an empty image");
  if (tile_w == 0 || tile_h == 0) return Bad("SIZ declares an empty tile");
  if (tile_x0 > x0 || tile_y0 > y0 || tile_x0 + tile_w <= x0 || tile_y0 + tile_h <= y0)
    return Bad("SIZ's tile grid does not cover the image's origin");
  for (int64_t c = 0; c < components; ++c)
    if (U8(s, 37 + 3 * c) == 0 || U8(s, 38 + 3 * c) == 0) return Bad("SIZ declares a subsampling of 0");
  h.width = x - x0;
  h.height = y - y0;
  // At most 2^32 tiles a side: the product fits, and is checked all the same.
  h.tiles = OrMax(CheckedMul((x - tile_x0 + tile_w - 1) / tile_w, (y - tile_y0 + tile_h - 1) / tile_h));
  h.components = static_cast<int>(components);
  h.precision = static_cast<int>(U8(s, 36) & 0x7F) + 1;
  h.is_signed = (U8(s, 36) & 0x80) != 0;
  h.subsampling_x = static_cast<int>(U8(s, 37));
  h.subsampling_y = static_cast<int>(U8(s, 38));
  return absl::OkStatus();
}

// SPcod / SPcoc: decomposition levels, code-block width and height exponent
// offsets, code-block style, transform (T.800 A.6.1, tables A.15 and A.18).
absl::Status ReadCodingStyle(std::string_view s, const char* marker, Jpeg2000Header& h) {
  if (s.size() < 5) return Bad(absl::StrCat(marker, " is too short"));
  const int levels = static_cast<int>(U8(s, 0));
  const int xcb = static_cast<int>(U8(s, 1)), ycb = static_cast<int>(U8(s, 2));
  if (levels > kMaxLevels)
    return Bad(absl::StrCat(marker, " declares ", levels, " decomposition levels (T.800: at most ", kMaxLevels, ")"));
  if (xcb > 8 || ycb > 8 || xcb + ycb > 8)
    return Bad(absl::StrCat(marker, " declares code-blocks of 2^", xcb + 2, " x 2^", ycb + 2,
                            " samples (T.800: 4 to 1024 a side, at most 4096)"));
  h.decomposition_levels = std::max(h.decomposition_levels, levels);
  h.code_block_width = std::max(h.code_block_width, 1 << (xcb + 2));
  h.code_block_height = std::max(h.code_block_height, 1 << (ycb + 2));
  return absl::OkStatus();
}

// One main-header marker segment's contents (after its length).
absl::Status ReadSegment(uint32_t marker, std::string_view s, bool& has_cod, Jpeg2000Header& h) {
  if (marker == kCod) {
    has_cod = true;
    if (s.size() < 5) return Bad("COD is too short");
    return ReadCodingStyle(s.substr(5), "COD", h);  // after Scod and SGcod
  }
  if (marker == kCoc) {
    const size_t component_bytes = h.components < 257 ? 1 : 2;  // Ccoc
    if (s.size() < component_bytes + 1) return Bad("COC is too short");
    return ReadCodingStyle(s.substr(component_bytes + 1), "COC", h);  // after Ccoc and Scoc
  }
  if (marker == kSiz) return Bad("a second SIZ");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Jpeg2000Header> ReadJpeg2000Header(std::string_view data) {
  std::string_view s = data;
  if (IsJp2(data)) {
    auto codestream = Jp2Codestream(data);
    if (!codestream.ok()) return codestream.status();
    s = *codestream;
  }
  if (s.size() < 6 || U16(s, 0) != kSoc || U16(s, 2) != kSiz) return Bad("no SOC and SIZ at the start");
  Jpeg2000Header h;
  bool has_cod = false;
  size_t at = 2;
  while (true) {
    if (s.size() - at < 2) return Bad("the main header ends before its first tile part");
    const uint32_t marker = U16(s, at);
    if (marker == kSot) break;
    if (marker >> 8 != 0xFF || s.size() - at < 4)
      return Bad(absl::StrCat("no marker segment at byte ", at, " of the main header"));
    const size_t length = U16(s, at + 2);
    if (length < 2 || length > s.size() - at - 2)
      return Bad(absl::StrCat("marker segment 0x", absl::Hex(marker), " runs past the data"));
    const std::string_view segment = s.substr(at + 4, length - 2);
    const absl::Status read = at == 2 ? ReadSiz(segment, h) : ReadSegment(marker, segment, has_cod, h);
    if (!read.ok()) return read;
    at += 2 + length;
  }
  if (!has_cod) return Bad("no COD before the first tile part");
  return h;
}

}  // namespace upp::imageio
