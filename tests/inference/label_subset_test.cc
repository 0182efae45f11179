// inference/label_subset.h: the box of a label subset in a coarse label map,
// and a label map cut down to the subset.
#include "inference/label_subset.h"

#include <gtest/gtest.h>

namespace upp::inference {
namespace {

// 20 x 10 x 6 voxels (x, y, z) of 2 x 1 x 3 mm; label 2 at x 4..6, y 2..3,
// z 1; label 3 at one voxel (x 18, y 9, z 5).
LabelMap Map() {
  LabelMap m;
  m.geometry.size = {20, 10, 6};
  m.geometry.spacing = {2.0, 1.0, 3.0};
  m.labels.assign(20 * 10 * 6, 0);
  const auto at = [&](int64_t x, int64_t y, int64_t z) -> uint16_t& { return m.labels[(z * 10 + y) * 20 + x]; };
  for (int64_t x = 4; x <= 6; ++x)
    for (int64_t y = 2; y <= 3; ++y) at(x, y, 1) = 2;
  at(18, 9, 5) = 3;
  at(0, 0, 0) = 1;
  m.stats = {{0, 1200 - 8, 0}, {1, 1, 0}, {2, 6, 0}, {3, 1, 0}};
  return m;
}

TEST(LabelBoxTest, TheBoxOfTheLabelsGrowsByTheMarginInEachAxissSpacingAndIsClamped) {
  const LabelMap m = Map();
  const auto tight = LabelBox(m, {2}, 0);
  ASSERT_TRUE(tight.has_value());
  EXPECT_EQ(*tight, (preprocessing::VoxelBox{{{1, 2}, {2, 4}, {4, 7}}}));  // (z, y, x)
  // 4 mm: 2 voxels of 2 mm in x, 4 of 1 mm in y, 2 of 3 mm in z (rounded up).
  EXPECT_EQ(*LabelBox(m, {2}, 4), (preprocessing::VoxelBox{{{0, 4}, {0, 8}, {2, 9}}}));
  // Both labels: the union, clamped to the volume.
  EXPECT_EQ(*LabelBox(m, {2, 3}, 4), (preprocessing::VoxelBox{{{0, 6}, {0, 10}, {2, 20}}}));
}

TEST(LabelBoxTest, NoVoxelOfTheLabelsMeansNoBox) {
  EXPECT_FALSE(LabelBox(Map(), {4, 5}, 10).has_value());
  EXPECT_FALSE(LabelBox(Map(), {}, 10).has_value());
}

TEST(AimAtLabelsTest, TheSecondPassRunsInTheLabelsBoxTiledOnlyWhenAsked) {
  JobOptions options;
  options.step = 0.75;
  ASSERT_TRUE(AimAtLabels(Map(), {2}, 4, /*tile=*/true, &options));
  ASSERT_TRUE(options.region.has_value());
  EXPECT_EQ(*options.region, *LabelBox(Map(), {2}, 4));
  EXPECT_TRUE(options.tile_box);
  EXPECT_EQ(options.step, 0.75);  // the rest of the options stay the mode's
  ASSERT_TRUE(AimAtLabels(Map(), {3}, 0, /*tile=*/false, &options));
  EXPECT_EQ(*options.region, (preprocessing::VoxelBox{{{5, 6}, {9, 10}, {18, 19}}}));
  EXPECT_FALSE(options.tile_box);
}

TEST(AimAtLabelsTest, NothingLocatedLeavesTheOptionsAlone) {
  JobOptions options;
  EXPECT_FALSE(AimAtLabels(Map(), {7}, 20, true, &options));
  EXPECT_FALSE(options.region.has_value());
  EXPECT_FALSE(options.tile_box);
}

TEST(KeepLabelsTest, OtherLabelsBecomeBackgroundAndLeaveTheStats) {
  LabelMap m = Map();
  KeepLabels({2}, &m);
  int64_t twos = 0, others = 0;
  for (uint16_t l : m.labels) {
    twos += l == 2;
    others += l != 0 && l != 2;
  }
  EXPECT_EQ(twos, 6);
  EXPECT_EQ(others, 0);
  ASSERT_EQ(m.stats.size(), 2u);
  EXPECT_EQ(m.stats[0].value, 0);
  EXPECT_EQ(m.stats[0].voxels, 1200 - 6);  // grew by the two cleared voxels
  EXPECT_DOUBLE_EQ(m.stats[0].volume_ml, (1200 - 6) * 6.0 / 1000.0);
  EXPECT_EQ(m.stats[1].value, 2);
  EXPECT_EQ(m.stats[1].voxels, 6);
}

}  // namespace
}  // namespace upp::inference
