// The plan: JSON round trip and errors that name the field.
#include "preprocessing/plan.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

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

// One read reports every mistake: a server start costs seconds of loading.
TEST(Plan, CheckPlanJsonReportsEveryProblemAtOnce) {
  const std::string text = R"({
    "patch_size": [64, 128, 128], "step": 2, "num_classes": "many", "transpose": [0, 0, 1],
    "normalization": [{"scheme": "ct", "clip_low": 5, "sd": 3}, {"scheme": "mr"}],
    "labels": [{"value": "x"}, {"value": 1, "rgb": [300, 0, 0]}]})";
  Plan read;
  const std::vector<std::string> problems = CheckPlanJson(text, &read);
  const std::vector<std::string> expected = {
      "plan.patch_size: unknown field (did you mean \"patch\"?)",
      "plan.num_classes: must be an integer, got \"many\"",
      "plan.normalization[0].clip_high: missing",
      "plan.normalization[0].mean: missing",
      "plan.normalization[0].std: missing",
      "plan.normalization[0].sd: unknown field (did you mean \"std\"?)",
      "plan.normalization[1].scheme: must be \"ct\", \"zscore\" or \"none\", got \"mr\"",
      "plan.labels[0].value: must be an integer, got \"x\"",
      "plan.labels[1].rgb: every component must be in [0, 255]",
      "plan.transpose: must be a permutation of 0, 1, 2, got [0,0,1]",
      "plan.step: must be in (0, 1], got 2",
  };
  for (const auto& e : expected) {
    EXPECT_TRUE(std::any_of(problems.begin(), problems.end(),
                            [&](const std::string& p) { return p.find(e) != std::string::npos; }))
        << "missing: " << e;
  }
  EXPECT_EQ(problems.size(), expected.size());
  // The entry with an unknown scheme still counts as a channel.
  EXPECT_EQ(read.input_channels(), 2);
  // FromJson refuses with all of them, not the first.
  auto plan = Plan::FromJson(text);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("plan.patch_size"), std::string::npos);
  EXPECT_NE(plan.status().message().find("plan.step"), std::string::npos);
  EXPECT_TRUE(CheckPlanJson(DefaultCtPlan(14).ToJson()).empty());
}

TEST(Plan, MismatchesWithTheNetworkNameBothValues) {
  const Plan plan = DefaultCtPlan(14, {64, 128, 128}, 1);
  EXPECT_TRUE(PlanNetworkMismatches(plan, 14, {64, 128, 128}, 1).empty());
  const auto m = PlanNetworkMismatches(plan, 8, {32, 64, 64}, 4);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0], "plan.patch [64,128,128] but the network's is [32,64,64]");
  EXPECT_EQ(m[1], "plan.num_classes 14 but the network's is 8");
  EXPECT_NE(m[2].find("but the network takes 4 channel"), std::string::npos) << m[2];

  auto s = PlanForNetwork(plan.ToJson(), {}, 8, {32, 64, 64}, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("differs from the network's"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("plan.patch [64,128,128] but the network's is [32,64,64]"), std::string::npos);
  EXPECT_NE(s.status().message().find("plan.num_classes 14 but the network's is 8"), std::string::npos);
  // No plan anywhere: the CT default, shaped like the network.
  auto fallback = PlanForNetwork("", {}, 8, {32, 64, 64}, 1);
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  EXPECT_EQ(fallback->patch, (std::array<int64_t, 3>{32, 64, 64}));
}

// Overlays, legends and the SEG's recommended colours tell every organ apart.
TEST(Plan, BtcvLabelColoursAreDistinct) {
  const Plan plan = DefaultCtPlan(14);
  EXPECT_GE(imageio::SmallestColourDistance(plan.labels), 20.0);
}

// crop: body for CT by default, nonzero (nnU-Net's) otherwise; the older
// crop_to_nonzero keeps its meaning.
TEST(Plan, CropDefaultsByModalityAndTheOlderKeyKeepsItsMeaning) {
  auto read = [](const std::string& json) {
    auto p = Plan::FromJson(json);
    EXPECT_TRUE(p.ok()) << json << ": " << p.status();
    return p.ok() ? p->ResolvedCrop() : CropMode::kNone;
  };
  EXPECT_EQ(read("{}"), CropMode::kBody);  // the default normalisation is CT
  EXPECT_EQ(read(R"({"normalization": [{"scheme": "zscore"}]})"), CropMode::kNonzero);
  EXPECT_EQ(read(R"({"normalization": [{"scheme": "none"}]})"), CropMode::kNonzero);
  EXPECT_EQ(read(R"({"crop_to_nonzero": true})"), CropMode::kNonzero);
  EXPECT_EQ(read(R"({"crop_to_nonzero": false})"), CropMode::kNone);
  EXPECT_EQ(read(R"({"crop": "none"})"), CropMode::kNone);
  EXPECT_EQ(read(R"({"crop": "nonzero"})"), CropMode::kNonzero);
  EXPECT_EQ(read(R"({"crop": "body"})"), CropMode::kBody);
  EXPECT_EQ(DefaultCtPlan().ResolvedCrop(), CropMode::kBody);

  // Written as "crop" with the default resolved; read back the same.
  auto old = Plan::FromJson(R"({"crop_to_nonzero": false})");
  ASSERT_TRUE(old.ok());
  EXPECT_NE(old->ToJson().find(R"("crop":"none")"), std::string::npos) << old->ToJson();
  EXPECT_EQ(old->ToJson().find("crop_to_nonzero"), std::string::npos);
  EXPECT_EQ(Plan::FromJson(old->ToJson())->ResolvedCrop(), CropMode::kNone);

  const std::vector<std::string> problems =
      CheckPlanJson(R"({"crop": "body", "crop_to_nonzero": true, "normalization": [{"scheme": "zscore"}]})");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].rfind("plan.crop_to_nonzero: give \"crop\" alone", 0), 0u) << problems[0];
  EXPECT_EQ(CheckPlanJson(R"({"crop": "head"})"),
            std::vector<std::string>{"plan.crop: must be \"body\", \"nonzero\" or \"none\", got \"head\""});
  EXPECT_EQ(CheckPlanJson(R"({"crop": "body", "normalization": [{"scheme": "zscore"}]})"),
            std::vector<std::string>{"plan.crop: \"body\" finds the body in Hounsfield units: normalization[0] must "
                                     "be \"ct\", got \"zscore\""});
  EXPECT_EQ(CheckPlanJson(R"({"crop_to_nonzero": "yes"})"),
            std::vector<std::string>{"plan.crop_to_nonzero: must be true or false, got \"yes\""});
}

}  // namespace
}  // namespace upp::preprocessing
