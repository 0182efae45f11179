// preprocessing/nonfinite.h: NaN / inf voxels replaced per channel by that
// channel's lowest finite value and counted, or refused.
#include "preprocessing/nonfinite.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace upp::preprocessing {
namespace {

imageio::Volume TwoChannels() {
  imageio::Volume v;
  v.geometry.size = {2, 2, 1};
  v.channels = 2;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  v.voxels = {-5,  nan, 3,   inf,    // channel 0: lowest finite -5
              nan, nan, nan, -inf};  // channel 1: nothing finite
  return v;
}

TEST(NonFiniteTest, ReplacedByEachChannelsLowestAndCounted) {
  imageio::Volume v = TwoChannels();
  auto replaced = HandleNonFinite(v, NonFinitePolicy::kReplace);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(*replaced, 6);
  EXPECT_EQ(v.voxels, (std::vector<float>{-5, -5, 3, -5, 0, 0, 0, 0}));
}

TEST(NonFiniteTest, RefusedWithTheCountAndNothingChangedWhenFinite) {
  imageio::Volume v = TwoChannels();
  auto refused = HandleNonFinite(v, NonFinitePolicy::kRefuse);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("2 NaN or infinite voxels"), std::string::npos) << refused.status();
  imageio::Volume finite = TwoChannels();
  finite.voxels = {1, 2, 3, 4, 5, 6, 7, 8};
  auto none = HandleNonFinite(finite, NonFinitePolicy::kRefuse);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0);
  EXPECT_EQ(finite.voxels, (std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}));
}

}  // namespace
}  // namespace upp::preprocessing
