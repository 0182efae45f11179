// The differentiable path that training uses (module in train mode, autograd
// on): it computes the same function as the inference path, gradients reach
// every trainable parameter, and a few optimizer steps fit a fixed batch.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "model/network.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace upp::model {
namespace {

std::string Fixture(const std::string& preset, const std::string& what) {
  return std::string(UPP_FIXTURES_DIR) + "/" + preset + "_small_" + what + ".safetensors";
}

class TrainingPathTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainingPathTest, EqualsTheInferencePath) {
  auto net = Network::FromWeightsFile(Fixture(GetParam(), "weights"));
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  auto reader = SafetensorsReader::Open(Fixture(GetParam(), "io"));
  ASSERT_TRUE(reader.ok());
  const torch::Tensor input = *ReadTensorAsFloat(**reader, *(*reader)->Find("input"));
  auto fast = (*net)->Forward(input);
  ASSERT_TRUE(fast.ok());

  // A fresh module with the same weights, in train mode, but batch norms on
  // their running statistics, so that both compute the same function.
  UnetrPP module((*net)->config());
  auto weights = SafetensorsReader::Open(Fixture(GetParam(), "weights"));
  ASSERT_TRUE(weights.ok());
  ASSERT_TRUE(LoadWeights(*module, **weights, LoadOptions{}, nullptr).ok());
  module->train();
  for (auto& m : module->modules())
    if (m->as<torch::nn::BatchNorm3dImpl>()) m->eval();
  auto slow = module->forward(input);
  ASSERT_TRUE(slow[0].requires_grad());  // the autograd path
  const double err = (slow[0].detach() - (*fast)[0]).abs().max().item<double>();
  std::printf("[%s] max |train-path logit - inference logit| = %.3g\n", GetParam().c_str(), err);
  EXPECT_LT(err, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TrainingPathTest, ::testing::Values("synapse", "tumor"));

TEST(TrainingTest, GradientsReachEveryParameterAndStepsFitABatch) {
  ModelConfig c = *Preset("synapse");
  c.patch = {32, 64, 64};
  c.feature_size = 4;
  c.depths = {1, 1, 1, 1};
  c.decoder_depth = 1;
  c.num_classes = 3;
  ASSERT_TRUE(c.Validate().ok());
  torch::manual_seed(0);
  UnetrPP module(c);
  module->train();
  const torch::Tensor x = torch::randn({2, 1, 32, 64, 64});
  const torch::Tensor y = (x.squeeze(1) > 0.5).to(torch::kLong) + (x.squeeze(1) > 1.5).to(torch::kLong);
  auto loss_of = [&] {
    auto outs = module->forward(x, /*deep_supervision=*/true);
    torch::Tensor loss = torch::nn::functional::cross_entropy(outs[0], y);
    for (int i = 1; i < 3; ++i) loss = loss + 0.1 * outs[i].pow(2).mean();  // reach out2, out3
    return loss;
  };
  torch::Tensor loss = loss_of();
  loss.backward();
  int64_t without = 0;
  for (const auto& p : module->named_parameters()) {
    if (!p.value().requires_grad()) continue;
    if (!p.value().grad().defined() || p.value().grad().abs().sum().item<double>() == 0) {
      ++without;
      ADD_FAILURE() << p.key() << " gets no gradient";
    }
  }
  EXPECT_EQ(without, 0);
  torch::optim::Adam adam(module->parameters(), torch::optim::AdamOptions(3e-3));
  const double first = loss.item<double>();
  double last = first;
  for (int step = 0; step < 8; ++step) {
    adam.zero_grad();
    torch::Tensor l = loss_of();
    l.backward();
    adam.step();
    last = l.item<double>();
  }
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace upp::model
