#include "imageio/labels.h"

namespace upp::imageio {

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
