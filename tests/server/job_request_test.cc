// What a request's header and input geometry make of a job before it
// exists: the options the header asks for, and the window limit and working
// memory admission applies.
#include "server/job_request.h"

#include <gtest/gtest.h>

#include "server/config.h"

namespace upp::server {
namespace {

// The limits of a default configuration.
JobLimits Defaults() {
  unetrpp::v1::ServerConfig config;
  ApplyDefaults(config);
  return JobLimits::FromConfig(config);
}

imageio::Geometry Ct() {
  imageio::Geometry g;
  g.size = {256, 256, 100};
  g.spacing = {1.5, 1.5, 3.0};
  return g;
}

TEST(JobRequestTest, TheHeaderSetsStepAndMirroring) {
  unetrpp::v1::RequestHeader header;
  EXPECT_FALSE(JobOptionsFromHeader(header).step.has_value());
  EXPECT_FALSE(JobOptionsFromHeader(header).mirror_axes.has_value());  // the plan's
  header.set_step(0.7);
  header.add_mirror_axes(2);
  EXPECT_DOUBLE_EQ(*JobOptionsFromHeader(header).step, 0.7);
  EXPECT_EQ(*JobOptionsFromHeader(header).mirror_axes, std::vector<int>{2});
  header.set_mirror(true);  // all three axes, whatever mirror_axes says
  EXPECT_EQ(*JobOptionsFromHeader(header).mirror_axes, (std::vector<int>{0, 1, 2}));
}

TEST(JobRequestTest, WindowsPastTheLimitAreRefusedNamingIt) {
  const auto plan = preprocessing::DefaultCtPlan();
  inference::JobOptions plain;
  plain.mirror_axes = std::vector<int>{};
  const int64_t windows = inference::SegmentationJob::CountItems(Ct(), plan, plain);
  ASSERT_GT(windows, 1);
  JobLimits limits = Defaults();
  limits.max_windows = windows;
  auto bytes = JobBytesToAdmit(Ct(), plan, plain, limits);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, inference::SegmentationJob::EstimateBytes(Ct(), 1, plan, plain));
  EXPECT_GT(*bytes, Ct().NumVoxels() * 4);  // at least the float volume

  inference::JobOptions mirrored = plain;
  mirrored.mirror_axes = std::vector<int>{0, 1, 2};  // 8 variants of each window
  const auto refused = JobBytesToAdmit(Ct(), plan, mirrored, limits);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find(std::to_string(8 * windows) + " windows"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("limits.max_windows_per_request"), std::string::npos);
}

// The 64-byte attack of issue 28: 4 x 4 x 4 voxels of 450 x 450 x 300 mm
// would be admitted as a whole-body volume on the model's grid.
TEST(JobRequestTest, HugeVoxelsAndHugeUpsamplingAreRefusedNamingTheSpacing) {
  const auto plan = preprocessing::DefaultCtPlan();  // 3 x 0.76 x 0.76 mm
  imageio::Geometry bomb;
  bomb.size = {4, 4, 4};
  bomb.spacing = {450, 450, 300};
  auto s = CheckResampling(bomb, plan, Defaults());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("450 x 450 x 300 mm"), std::string::npos) << s;
  EXPECT_NE(s.message().find("limits.max_spacing_mm"), std::string::npos) << s;

  imageio::Geometry coarse = bomb;
  coarse.spacing = {10, 10, 10};  // plausible voxels, 577 network voxels each
  s = CheckResampling(coarse, plan, Defaults());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("limits.max_resampling_factor (64)"), std::string::npos) << s;
  EXPECT_EQ(JobBytesToAdmit(coarse, plan, {}, Defaults()).status().code(), absl::StatusCode::kInvalidArgument);

  // What scanners make: thick-slice CT, low-resolution MR, PET-like 4 mm.
  for (const std::array<double, 3> spacing : {std::array<double, 3>{0.7, 0.7, 5}, {1, 1, 6}, {4, 4, 4}}) {
    imageio::Geometry g = bomb;
    g.spacing = spacing;
    EXPECT_TRUE(CheckResampling(g, plan, Defaults()).ok()) << spacing[0] << " " << spacing[2];
  }
}

}  // namespace
}  // namespace upp::server
