// server/speed_mode.h: a request's mode and label subset against its model's
// configuration, before anything runs.
#include "server/speed_mode.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace upp::server {
namespace {

using unetrpp::v1::ModelEntry;
using unetrpp::v1::RequestHeader;

preprocessing::Plan PlanWithOrgans() {
  preprocessing::Plan plan;
  plan.num_classes = 3;
  plan.labels = {{0, "background", {0, 0, 0}}, {1, "liver", {200, 100, 50}}, {2, "spleen", {150, 100, 160}}};
  return plan;
}

ModelEntry Entry(const std::string& fastest = "coarse") {
  ModelEntry e;
  e.set_name("full-model");
  e.mutable_speed()->set_fastest_model(fastest);
  return e;
}

TEST(SpeedModeTest, TheHeadersModeOrTheModelsDefault) {
  RequestHeader h;
  auto plan = PlanSpeed(h, Entry(), PlanWithOrgans());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->mode, unetrpp::v1::SPEED_MODE_FULL);
  EXPECT_TRUE(plan->run_model.empty());
  EXPECT_TRUE(plan->locator_model.empty());  // no subset, nothing to locate
  ModelEntry fast_default = Entry();
  fast_default.mutable_speed()->set_default_mode("fast");
  EXPECT_EQ(PlanSpeed(h, fast_default, PlanWithOrgans())->mode, unetrpp::v1::SPEED_MODE_FAST);
  h.set_mode(unetrpp::v1::SPEED_MODE_FASTEST);
  plan = PlanSpeed(h, fast_default, PlanWithOrgans());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->mode, unetrpp::v1::SPEED_MODE_FASTEST);
  EXPECT_EQ(plan->run_model, "coarse");
}

TEST(SpeedModeTest, AModeTheModelCannotServeOrThatIsNoModeIsRefusedNamingIt) {
  RequestHeader h;
  h.set_mode(unetrpp::v1::SPEED_MODE_FASTEST);
  auto plan = PlanSpeed(h, Entry(""), PlanWithOrgans());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(plan.status().message(), "cannot serve mode fastest")) << plan.status();
  EXPECT_TRUE(absl::StrContains(plan.status().message(), "full-model")) << plan.status();
  h.set_mode(static_cast<unetrpp::v1::SpeedMode>(7));
  plan = PlanSpeed(h, Entry(), PlanWithOrgans());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(plan.status().message(), "mode: 7")) << plan.status();
}

TEST(SpeedModeTest, LabelsAreNamesOfTheModelsOrgansAndUnknownOnesAreAllNamed) {
  RequestHeader h;
  h.add_labels("spleen");
  h.add_labels("liver");
  h.add_labels("spleen");
  auto plan = PlanSpeed(h, Entry(), PlanWithOrgans());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->label_values, (std::vector<int>{1, 2}));
  EXPECT_EQ(plan->locator_model, "coarse");  // the fastest model locates them
  EXPECT_DOUBLE_EQ(plan->margin_mm, inference::kDefaultSubsetMarginMm);

  h.add_labels("pancreas");
  h.add_labels("background");  // not an organ to ask for
  h.add_labels("");
  plan = PlanSpeed(h, Entry(), PlanWithOrgans());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(plan.status().message());
  EXPECT_TRUE(absl::StrContains(message, "\"pancreas\", \"background\", \"\" are not labels")) << message;
  EXPECT_TRUE(absl::StrContains(message, "its labels: liver, spleen")) << message;
}

TEST(SpeedModeTest, ASubsetWithoutAFastestModelRunsTheWholeVolumeAndFastestRunsNoLocator) {
  RequestHeader h;
  h.add_labels("liver");
  EXPECT_TRUE(PlanSpeed(h, Entry(""), PlanWithOrgans())->locator_model.empty());
  h.set_mode(unetrpp::v1::SPEED_MODE_FASTEST);
  auto plan = PlanSpeed(h, Entry(), PlanWithOrgans());
  EXPECT_EQ(plan->run_model, "coarse");
  EXPECT_TRUE(plan->locator_model.empty());  // the fastest model's labels are the answer
}

TEST(SpeedModeTest, FastTakesTheModelsStepWithoutMirroringUnlessTheHeaderSaysOtherwise) {
  RequestHeader h;
  SpeedPlan fast;
  fast.mode = unetrpp::v1::SPEED_MODE_FAST;
  ModelEntry e = Entry();
  auto options = JobOptionsFor(h, fast, e);
  EXPECT_DOUBLE_EQ(*options.step, kDefaultFastStep);
  EXPECT_TRUE(options.mirror_axes->empty());
  EXPECT_TRUE(options.tile_box);  // the body's box tiled by windows of its own
  e.mutable_speed()->set_fast_step(0.8);
  EXPECT_DOUBLE_EQ(*JobOptionsFor(h, fast, e).step, 0.8);
  h.set_step(0.6);
  h.set_mirror(true);
  options = JobOptionsFor(h, fast, e);
  EXPECT_DOUBLE_EQ(*options.step, 0.6);
  EXPECT_EQ(options.mirror_axes->size(), 3u);
  SpeedPlan fastest;  // the coarse model with `fast`'s options
  fastest.mode = unetrpp::v1::SPEED_MODE_FASTEST;
  options = JobOptionsFor(RequestHeader(), fastest, e);
  EXPECT_DOUBLE_EQ(*options.step, 0.8);
  EXPECT_TRUE(options.mirror_axes->empty());
  EXPECT_TRUE(options.tile_box);
  SpeedPlan full;
  options = JobOptionsFor(RequestHeader(), full, e);
  EXPECT_FALSE(options.step.has_value());  // the plan's
  EXPECT_FALSE(options.mirror_axes.has_value());
  EXPECT_FALSE(options.tile_box);  // the whole run's windows: its labels exactly
}

TEST(SpeedModeTest, TheConfigurationIsCheckedNamingTheField) {
  const std::vector<std::string> served{"full-model", "coarse"};
  EXPECT_TRUE(ValidateSpeedModes(Entry(), served).ok());
  EXPECT_TRUE(ValidateSpeedModes(Entry(""), served).ok());
  const auto expect_bad = [&](const ModelEntry& e, const std::string& field) {
    const absl::Status s = ValidateSpeedModes(e, served);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_TRUE(absl::StrContains(s.message(), "models[\"full-model\"].speed." + field)) << s;
  };
  ModelEntry e = Entry("missing");
  expect_bad(e, "fastest_model");
  e = Entry("full-model");
  expect_bad(e, "fastest_model");
  e = Entry();
  e.mutable_speed()->set_default_mode("quick");
  expect_bad(e, "default_mode");
  e = Entry("");
  e.mutable_speed()->set_default_mode("fastest");
  expect_bad(e, "default_mode");
  e = Entry();
  e.mutable_speed()->set_fast_step(1.5);
  expect_bad(e, "fast_step");
  e = Entry();
  e.mutable_speed()->set_subset_margin_mm(-1);
  expect_bad(e, "subset_margin_mm");
}

TEST(SpeedModeTest, AFastestModelWithOtherLabelsIsRefusedAndTheTableKeepsTheSubset) {
  preprocessing::Plan other = PlanWithOrgans();
  EXPECT_TRUE(CheckSameLabels("a", PlanWithOrgans(), "b", other).ok());
  other.labels[2].name = "kidney";
  EXPECT_EQ(CheckSameLabels("a", PlanWithOrgans(), "b", other).code(), absl::StatusCode::kFailedPrecondition);
  other.labels.pop_back();
  EXPECT_EQ(CheckSameLabels("a", PlanWithOrgans(), "b", other).code(), absl::StatusCode::kFailedPrecondition);

  const auto kept = KeptLabelTable(PlanWithOrgans().labels, {2});
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].value, 0);
  EXPECT_EQ(kept[1].name, "spleen");
  EXPECT_EQ(KeptLabelTable(PlanWithOrgans().labels, {}).size(), 3u);
}

}  // namespace
}  // namespace upp::server
