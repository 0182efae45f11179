#include "imageio/labels.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmiod/cielabutil.h>

#include <cmath>
#include <limits>

namespace upp::imageio {

double ColourDistance(const std::array<uint8_t, 3>& a, const std::array<uint8_t, 3>& b) {
  // DCMTK's sRGB -> CIELAB (D65), the conversion the SEG writer uses for the
  // recommended display colours.
  double la, aa, ba, lb, ab, bb;
  IODCIELabUtil::rgb2Lab(la, aa, ba, a[0] / 255.0, a[1] / 255.0, a[2] / 255.0);
  IODCIELabUtil::rgb2Lab(lb, ab, bb, b[0] / 255.0, b[1] / 255.0, b[2] / 255.0);
  return std::sqrt((la - lb) * (la - lb) + (aa - ab) * (aa - ab) + (ba - bb) * (ba - bb));
}

double SmallestColourDistance(const std::vector<LabelInfo>& labels) {
  double smallest = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < labels.size(); ++i)
    for (size_t j = i + 1; j < labels.size(); ++j)
      if (labels[i].value != 0 && labels[j].value != 0)
        smallest = std::min(smallest, ColourDistance(labels[i].rgb, labels[j].rgb));
  return smallest;
}

std::optional<int> FindLabelValue(const std::vector<LabelInfo>& labels, std::string_view name) {
  for (const LabelInfo& l : labels)
    if (l.value > 0 && l.name == name) return l.value;
  return std::nullopt;
}

std::string EncodeRawLabels(const std::vector<uint16_t>& labels) {
  std::string raw(labels.size() * 2, '\0');
  for (size_t i = 0; i < labels.size(); ++i) {
    raw[2 * i] = static_cast<char>(labels[i] & 0xff);
    raw[2 * i + 1] = static_cast<char>(labels[i] >> 8);
  }
  return raw;
}

std::vector<uint16_t> DecodeRawLabels(std::string_view raw) {
  std::vector<uint16_t> labels(raw.size() / 2);
  for (size_t i = 0; i < labels.size(); ++i)
    labels[i] = static_cast<uint16_t>(static_cast<uint8_t>(raw[2 * i]) | (static_cast<uint8_t>(raw[2 * i + 1]) << 8));
  return labels;
}

}  // namespace upp::imageio
