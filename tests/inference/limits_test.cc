// Limits computed before anything is allocated: the resampled grid, the
// window count and the working-memory estimate saturate instead of wrapping.
#include <gtest/gtest.h>

#include <limits>

#include "imageio/checked_math.h"
#include "inference/job.h"
#include "inference/windows.h"
#include "preprocessing/plan.h"
#include "preprocessing/resampling.h"

namespace upp::inference {
namespace {

using imageio::Geometry;
using imageio::Volume;
using preprocessing::Plan;
using preprocessing::ResampledSize;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

TEST(LimitsTest, ResampledSizeSaturatesInsteadOfWrapping) {
  const auto size = ResampledSize({1, 1, 1}, {1e300, 1, 1}, {1, 1, 1});
  EXPECT_EQ(size[0], kMax);
  EXPECT_EQ(size[1], 1);
}

TEST(LimitsTest, WindowCountsAreComputedWithoutBuilding) {
  EXPECT_EQ(CountWindowStarts(64, 64, 0.5), 1);
  EXPECT_EQ(CountWindowStarts(512, 128, 0.5), static_cast<int64_t>(WindowStarts(512, 128, 0.5).size()));
  EXPECT_EQ(CountWindowStarts(301, 64, 0.37), static_cast<int64_t>(WindowStarts(301, 64, 0.37).size()));
  EXPECT_EQ(CountWindowStarts(kMax, 1, 1e-300), kMax);
}

// A spacing chosen so that the resampled grid's byte count passes 2^63: the
// estimate must saturate (refused by any limit), never wrap negative.
TEST(LimitsTest, EstimateBytesNeverGoesNegative) {
  Plan plan;
  plan.target_spacing = {1, 1, 1};
  Geometry g;
  g.size = {100, 100, 100};
  g.spacing = {1, 1, 1};
  const int64_t normal = SegmentationJob::EstimateBytes(g, 1, plan);
  EXPECT_GT(normal, 0);
  for (double s : {1e5, 2.1e6, 1e7, 1e12, 1e300}) {
    g.spacing = {s, s, s};
    const int64_t e = SegmentationJob::EstimateBytes(g, 1, plan);
    EXPECT_GT(e, normal) << s;
  }
  g.spacing = {1e12, 1e12, 1e12};
  EXPECT_EQ(SegmentationJob::EstimateBytes(g, 1, plan), kMax);
  EXPECT_EQ(SegmentationJob::CountItems(g, plan), kMax);
}

TEST(LimitsTest, CountItemsMatchesTheJob) {
  Plan plan;
  plan.target_spacing = {1, 1, 1};
  plan.patch = {16, 16, 16};
  plan.num_classes = 2;
  plan.crop = preprocessing::CropMode::kNone;
  Volume v;
  v.geometry.size = {40, 33, 20};
  v.geometry.spacing = {1, 1, 1};
  v.channels = 1;
  v.voxels.assign(40 * 33 * 20, 1.0f);
  JobOptions options;
  options.step = 0.3;
  options.mirror_axes = std::vector<int>{0, 2};
  const int64_t expected = SegmentationJob::CountItems(v.geometry, plan, options);
  auto job = SegmentationJob::Create(std::move(v), plan, options);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ((*job)->num_items(), expected);
}

}  // namespace
}  // namespace upp::inference
