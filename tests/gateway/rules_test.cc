#include "gateway/rules.h"

#include <gtest/gtest.h>

#include "gateway/config.h"
#include "proto/text_config.h"

namespace upp::gateway {
namespace {

unetrpp::v1::GatewayConfig Rules(const std::string& text) {
  unetrpp::v1::GatewayConfig c;
  EXPECT_TRUE(proto::ParseTextConfig(text, c).ok());
  ApplyDefaults(c);
  return c;
}

SeriesSummary Ct(int slices) {
  SeriesSummary s;
  s.modality = "CT";
  s.body_part = "ABDOMEN";
  s.series_description = "Abdomen 1.0 B30f";
  s.protocol_name = "ABD_ROUTINE";
  s.orientation = "axial";
  s.files.resize(static_cast<size_t>(slices));
  return s;
}

TEST(RulesTest, FirstRuleWhoseEveryCriterionMatchesWins) {
  const auto c = Rules(R"(
    rules { name: "mr" modalities: "MR" }
    rules { name: "thin-abdomen" modalities: "CT" body_parts: "*abdomen*" series_descriptions: "*1.0*" min_instances: 50 }
    rules { name: "any-ct" modalities: "ct" })");
  EXPECT_EQ(MatchRule(c, Ct(100))->name(), "thin-abdomen");
  EXPECT_EQ(MatchRule(c, Ct(49))->name(), "any-ct");  // too few slices for the second
  auto mr = Ct(100);
  mr.modality = "MR";
  EXPECT_EQ(MatchRule(c, mr)->name(), "mr");
  auto pt = Ct(100);
  pt.modality = "PT";
  EXPECT_EQ(MatchRule(c, pt), nullptr);
}

TEST(RulesTest, GlobsAreCaseInsensitiveAndAnEmptyListMatchesAnything) {
  const auto c = Rules(R"(rules { name: "r" body_parts: "CHEST" body_parts: "abd*" protocol_names: "*routine" })");
  EXPECT_NE(MatchRule(c, Ct(1)), nullptr);
  auto head = Ct(1);
  head.body_part = "HEAD";
  EXPECT_EQ(MatchRule(c, head), nullptr);
  auto missing = Ct(1);
  missing.body_part = "";  // an attribute the series lacks matches no pattern
  EXPECT_EQ(MatchRule(c, missing), nullptr);
}

TEST(RulesTest, OrientationMustBeOneOfTheListed) {
  const auto c = Rules(R"(rules { name: "r" orientations: "axial" orientations: "coronal" })");
  auto s = Ct(1);
  EXPECT_NE(MatchRule(c, s), nullptr);
  s.orientation = "sagittal";
  EXPECT_EQ(MatchRule(c, s), nullptr);
  s.orientation = "";
  EXPECT_EQ(MatchRule(c, s), nullptr);
}

}  // namespace
}  // namespace upp::gateway
