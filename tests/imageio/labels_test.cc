#include "imageio/labels.h"

#include <gtest/gtest.h>

namespace upp::imageio {
namespace {

TEST(LabelsTest, ColourDistanceIsCie76InLab) {
  EXPECT_NEAR(ColourDistance({0, 0, 0}, {255, 255, 255}), 100.0, 0.1);  // L* 0 -> 100
  EXPECT_EQ(ColourDistance({10, 20, 30}, {10, 20, 30}), 0.0);
  EXPECT_LT(ColourDistance({221, 130, 101}, {216, 132, 105}), 5.0);  // two salmon shades
}

TEST(LabelsTest, SmallestDistanceIgnoresBackground) {
  std::vector<LabelInfo> labels{{0, "background", {0, 0, 0}}, {1, "a", {1, 1, 1}}, {2, "b", {255, 0, 0}}};
  EXPECT_GT(SmallestColourDistance(labels), 50.0);  // a is next to black background, which does not count
  labels.push_back({3, "c", {250, 0, 0}});
  EXPECT_LT(SmallestColourDistance(labels), 5.0);
}

TEST(LabelsTest, FindLabelValueFindsAStructureByNameButNeverBackground) {
  const std::vector<LabelInfo> labels = {{0, "background", {}}, {3, "liver", {}}, {7, "spleen", {}}};
  EXPECT_EQ(FindLabelValue(labels, "spleen"), 7);
  EXPECT_EQ(FindLabelValue(labels, "liver"), 3);
  EXPECT_FALSE(FindLabelValue(labels, "background").has_value());
  EXPECT_FALSE(FindLabelValue(labels, "Liver").has_value());  // names are exact
  EXPECT_FALSE(FindLabelValue({}, "liver").has_value());
}

TEST(LabelsTest, RawLabelsRoundTripLittleEndian) {
  const std::vector<uint16_t> labels{0, 1, 258, 65535};
  const std::string raw = EncodeRawLabels(labels);
  ASSERT_EQ(raw.size(), 8u);
  EXPECT_EQ(static_cast<uint8_t>(raw[4]), 2);
  EXPECT_EQ(static_cast<uint8_t>(raw[5]), 1);
  EXPECT_EQ(DecodeRawLabels(raw), labels);
}

}  // namespace
}  // namespace upp::imageio
