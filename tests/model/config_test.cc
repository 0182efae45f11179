#include "model/config.h"

#include <gtest/gtest.h>

#include "model/network.h"

namespace upp::model {
namespace {

TEST(ConfigTest, PresetsAreValidAndDeriveTokenCounts) {
  for (const auto& name : PresetNames()) {
    auto c = Preset(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_TRUE(c->Validate().ok()) << name << ": " << c->Validate().ToString();
  }
  auto s = *Preset("synapse");
  EXPECT_EQ(s.StageTokens(0), 32 * 32 * 32);
  EXPECT_EQ(s.StageTokens(3), 4 * 4 * 4);
  auto a = *Preset("acdc");
  EXPECT_EQ(a.StageTokens(0), 16 * 40 * 40);
  EXPECT_EQ(a.StageTokens(3), 2 * 5 * 5);
  // A custom patch changes the token counts, nothing else needed.
  s.patch = {32, 96, 160};
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(s.StageTokens(0), 16 * 24 * 40);
}

TEST(ConfigTest, UnknownPresetIsNotFound) {
  auto c = Preset("brain");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
}

struct BadCase {
  const char* what;
  void (*mutate)(ModelConfig&);
  const char* expect_in_message;
};

TEST(ConfigTest, InvalidCombinationsAreRefusedWithAClearMessage) {
  const BadCase cases[] = {
      {"patch not divisible",
       [](ModelConfig& c) {
         c.patch = {64, 100, 128};
       },
       "not divisible by stem x 8"},
      {"heads", [](ModelConfig& c) { c.num_heads = 5; }, "not divisible by num_heads"},
      {"in channels vs groups", [](ModelConfig& c) { c.in_channels = 3; }, "in_channels"},
      {"zero classes", [](ModelConfig& c) { c.num_classes = 0; }, "num_classes"},
      {"zero feature size", [](ModelConfig& c) { c.feature_size = 0; }, "feature_size"},
      {"zero depth", [](ModelConfig& c) { c.depths[2] = 0; }, "depths[2]"},
      {"negative stem",
       [](ModelConfig& c) {
         c.stem = {0, 4, 4};
       },
       "stem"},
      {"res blocks", [](ModelConfig& c) { c.res_blocks_after_epa = 3; }, "res_blocks_after_epa"},
  };
  for (const auto& bc : cases) {
    ModelConfig c = *Preset("synapse");
    bc.mutate(c);
    Status s = c.Validate();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bc.what;
    EXPECT_NE(s.message().find(bc.expect_in_message), std::string::npos) << bc.what << ": " << s.message();
    // Network::Create refuses the same config rather than crashing later.
    auto net = Network::Create(c);
    EXPECT_FALSE(net.ok()) << bc.what;
  }
}

TEST(ConfigTest, JsonRoundTrip) {
  ModelConfig c = *Preset("tumor");
  c.feature_size = 8;
  c.patch = {64, 64, 64};
  auto back = ModelConfig::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ToJson(), c.ToJson());
  EXPECT_EQ(back->projection, Projection::kSharedMatrix);
  EXPECT_EQ(back->fusion, Fusion::kSum);
  EXPECT_FALSE(ModelConfig::FromJson("{not json").ok());
  EXPECT_FALSE(ModelConfig::FromJson(R"({"preset":"synapse","patch":[1,2]})").ok());
  EXPECT_FALSE(ModelConfig::FromJson(R"({"preset":"synapse","projection":"weird"})").ok());
}

}  // namespace
}  // namespace upp::model
