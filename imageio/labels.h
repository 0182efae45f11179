// Label maps' shared vocabulary: one label's value, name and display colour
// (the plan's label table, the DICOM SEG's segments and the overview's legend
// all use it), and the raw label encoding of the API (OUTPUT_KIND_RAW_LABELS:
// uint16 little-endian, x fastest), which the server writes and clients read.
// Thread-safe (plain values and pure functions).
#ifndef UPP_IMAGEIO_LABELS_H_
#define UPP_IMAGEIO_LABELS_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upp::imageio {

struct LabelInfo {
  int value = 0;  // value in the label map (0 = background)
  std::string name;
  std::array<uint8_t, 3> rgb{0, 0, 0};  // display colour
};

// How different two display colours look: CIE76 distance in CIELAB (about 2
// is just noticeable; label tables keep every pair of structures >= 20 apart
// so that overlays and the SEG's recommended colours tell them apart).
double ColourDistance(const std::array<uint8_t, 3>& a, const std::array<uint8_t, 3>& b);
// The smallest ColourDistance between two labels of `labels` other than
// background (value 0); infinity for fewer than two.
double SmallestColourDistance(const std::vector<LabelInfo>& labels);

// The value of the label called `name` in `labels`; nullopt when there is
// none. Background (value 0) is never found: it is not a structure to ask for
// (a request's label subset, the tools' --labels).
std::optional<int> FindLabelValue(const std::vector<LabelInfo>& labels, std::string_view name);

// uint16 little-endian, whatever the host's byte order.
std::string EncodeRawLabels(const std::vector<uint16_t>& labels);
// The inverse; an odd trailing byte is ignored.
std::vector<uint16_t> DecodeRawLabels(std::string_view raw);

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_LABELS_H_
