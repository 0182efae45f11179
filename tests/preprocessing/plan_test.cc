// The plan: JSON round trip and errors that name the field.
#include "preprocessing/plan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "imageio/labels.h"

namespace upp::preprocessing {
namespace {

TEST(Plan, JsonRoundTripAndFieldNamesInErrors) {
  Plan plan = DefaultCtPlan(14);
  plan.mirror_axes = {0, 2};
  plan.normalization.push_back({ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, true});
  auto back = Plan::FromJson(plan.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), plan.ToJson());
  EXPECT_EQ(back->labels.size(), 14u);
  EXPECT_EQ(back->labels[6].name, "liver");
  EXPECT_TRUE(back->normalization[1].use_nonzero_mask);

  auto expect_field = [](const std::string& json, const std::string& field) {
    auto p = Plan::FromJson(json);
    ASSERT_FALSE(p.ok()) << json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(field), std::string::npos) << p.status();
  };
  expect_field("{\"step\": 1.5}", "plan.step");
  expect_field("{\"patch\": [0, 4, 4]}", "plan.patch");
  expect_field("{\"transpose\": [0, 0, 1]}", "plan.transpose");
  expect_field("{\"mirror_axes\": [3]}", "plan.mirror_axes");
  expect_field("{\"target_spacing\": \"x\"}", "plan.target_spacing");
  expect_field("{\"num_classes\": 3, \"labels\": [{\"value\": 3}]}", "plan.labels");
  expect_field(
      "{\"normalization\": [{\"scheme\": \"ct\", \"clip_low\": 5, \"clip_high\": 1, "
      "\"mean\": 0, \"std\": 1}]}",
      "plan.normalization[0]");
  expect_field("{\"stepp\": 0.5}", "plan.stepp");
  expect_field("[1]", "plan.json");
  EXPECT_EQ(Plan::FromMetadata({}).status().code(), absl::StatusCode::kNotFound);
}

// Overlays, legends and the SEG's recommended colours tell every organ apart.
TEST(Plan, BtcvLabelColoursAreDistinct) {
  const Plan plan = DefaultCtPlan(14);
  EXPECT_GE(imageio::SmallestColourDistance(plan.labels), 20.0);
}

}  // namespace
}  // namespace upp::preprocessing
