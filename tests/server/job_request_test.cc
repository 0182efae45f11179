// What a request's header and input geometry make of a job before it
// exists: the options the header asks for, and the window limit and working
// memory admission applies.
#include "server/job_request.h"

#include <gtest/gtest.h>

namespace upp::server {
namespace {

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
  auto bytes = JobBytesToAdmit(Ct(), plan, plain, windows);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, inference::SegmentationJob::EstimateBytes(Ct(), 1, plan, plain));
  EXPECT_GT(*bytes, Ct().NumVoxels() * 4);  // at least the float volume

  inference::JobOptions mirrored = plain;
  mirrored.mirror_axes = std::vector<int>{0, 1, 2};  // 8 variants of each window
  const auto refused = JobBytesToAdmit(Ct(), plan, mirrored, windows);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find(std::to_string(8 * windows) + " windows"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("limits.max_windows_per_request"), std::string::npos);
}

}  // namespace
}  // namespace upp::server
