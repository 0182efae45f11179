// JPEG 2000 codestreams written by hand, for the tests and the soak: the
// main header's layout (size, tiles, levels, code-blocks) is whatever the
// caller says, bounds or not, and the one tile part is empty. No OpenJPEG,
// no DCMTK.
#ifndef UPP_TESTS_TESTING_HOSTILE_JPEG2000_H_
#define UPP_TESTS_TESTING_HOSTILE_JPEG2000_H_

#include <cstdint>
#include <string>

namespace upp::testing {

inline void Put16Be(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v & 0xFF));
}
inline void Put32Be(std::string& s, uint32_t v) {
  Put16Be(s, v >> 16);
  Put16Be(s, v & 0xFFFF);
}

struct Layout {
  uint32_t width = 16, height = 16, tile_width = 16, tile_height = 16;
  int components = 1, levels = 0, xcb = 4, ycb = 4;  // code-block exponent offsets (2^(x+2))
};

// A codestream by hand: SOC, SIZ, COD, QCD, one empty tile part, EOC. With
// 256 x 255 samples in 1 x 1 tiles it is the 82-byte bomb of issue 28
// (65,280 tiles: 633 MB inside OpenJPEG's opj_read_header).
inline std::string Codestream(const Layout& l) {
  std::string s;
  Put16Be(s, 0xFF4F);
  Put16Be(s, 0xFF51);
  Put16Be(s, 38 + 3 * l.components);
  Put16Be(s, 0);  // Rsiz
  for (uint32_t v : {l.width, l.height, 0u, 0u, l.tile_width, l.tile_height, 0u, 0u}) Put32Be(s, v);
  Put16Be(s, l.components);
  for (int c = 0; c < l.components; ++c) s += std::string("\x07\x01\x01", 3);  // 8 bits, unsigned, 1 x 1
  Put16Be(s, 0xFF52);
  Put16Be(s, 12);
  s += std::string("\x00\x00\x00\x01\x00", 5);  // Scod, LRCP, 1 layer, no MCT
  s.push_back(static_cast<char>(l.levels));
  s.push_back(static_cast<char>(l.xcb));
  s.push_back(static_cast<char>(l.ycb));
  s += std::string("\x00\x01", 2);  // code-block style, 5-3 reversible
  Put16Be(s, 0xFF5C);
  Put16Be(s, 3 + 3 * l.levels + 1);
  s += std::string(1 + 3 * l.levels + 1, '\x40');  // Sqcd (no quantisation), SPqcd per sub-band
  Put16Be(s, 0xFF90);                              // SOT: tile 0, its only part, up to EOC
  Put16Be(s, 10);
  Put16Be(s, 0);
  Put32Be(s, 14);
  s += std::string("\x00\x01", 2);
  Put16Be(s, 0xFF93);
  Put16Be(s, 0xFFD9);
  return s;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_HOSTILE_JPEG2000_H_
