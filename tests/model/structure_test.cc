// The full-size presets expose exactly the reference state dict (names, order,
// shapes, dtypes, buffers included) and its trainable parameter count.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "model/network.h"
#include "model/unetrpp.h"

namespace upp::model {
namespace {

class StructureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StructureTest, StateDictMatchesReference) {
  std::ifstream in(std::string(UPP_FIXTURES_DIR) + "/" + GetParam() + "_full_state_dict.json");
  ASSERT_TRUE(in) << "missing fixture for " << GetParam();
  auto ref = nlohmann::json::parse(in);

  auto config = Preset(GetParam());
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->in_channels, ref["in_channels"].get<int64_t>());
  EXPECT_EQ(config->num_classes, ref["classes"].get<int64_t>());
  EXPECT_EQ(std::vector<int64_t>(config->patch.begin(), config->patch.end()), ref["patch"].get<std::vector<int64_t>>());

  torch::NoGradGuard no_grad;
  UnetrPP net(*config);
  auto state = StateDict(*net);
  const auto& tensors = ref["tensors"];
  ASSERT_EQ(state.size(), tensors.size());
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& [name, t] = state[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(name, tensors[i][0].get<std::string>()) << "at position " << i;
    EXPECT_EQ(t.sizes().vec(), tensors[i][1].get<std::vector<int64_t>>());
    const std::string dtype = tensors[i][2];
    EXPECT_EQ(t.scalar_type(), dtype == "int64" ? torch::kInt64 : torch::kFloat32);
  }
  EXPECT_EQ(CountTrainableParameters(*net), ref["trainable_parameters"].get<int64_t>());
}

INSTANTIATE_TEST_SUITE_P(Presets, StructureTest, ::testing::Values("synapse", "acdc", "lung", "tumor"));

TEST(StructureTest, SynapseSharesOneProjectionUnderTwoNames) {
  auto config = Preset("synapse");
  ASSERT_TRUE(config.ok());
  config->feature_size = 4;
  config->patch = {32, 64, 64};
  UnetrPP net(*config);
  auto state = StateDict(*net);
  torch::Tensor e, f;
  for (auto& [name, t] : state) {
    if (name == "unetr_pp_encoder.stages.0.0.epa_block.E.weight") e = t;
    if (name == "unetr_pp_encoder.stages.0.0.epa_block.F.weight") f = t;
  }
  ASSERT_TRUE(e.defined() && f.defined());
  EXPECT_TRUE(e.is_same(f));
}

}  // namespace
}  // namespace upp::model
