// Numeric parity with the reference implementation on the reduced fixtures.
#include <gtest/gtest.h>

#include <cstdlib>

#include "model/cpu_features.h"
#include "model/network.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace upp::model {
namespace {

// UPP_TEST_DEVICE=cuda runs the parity tests on a GPU (deploy/gpu-check.sh).
NetworkOptions TestOptions(Precision precision = Precision::kFloat32) {
  NetworkOptions o;
  if (const char* d = std::getenv("UPP_TEST_DEVICE")) o.device = torch::Device(d);
  o.precision = precision;
  return o;
}

struct Io {
  torch::Tensor input, logits, labels;
};

Io ReadIo(const std::string& name) {
  auto reader = SafetensorsReader::Open(std::string(UPP_FIXTURES_DIR) + "/" + name + "_small_io.safetensors");
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  Io io;
  io.input = *ReadTensorAsFloat(**reader, *(*reader)->Find("input"));
  io.logits = *ReadTensorAsFloat(**reader, *(*reader)->Find("logits"));
  io.labels = *ReadTensor(**reader, *(*reader)->Find("labels"));
  return io;
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, ReproducesReferenceLogitsAndLabels) {
  auto net = Network::FromWeightsFile(std::string(UPP_FIXTURES_DIR) + "/" + GetParam() + "_small_weights.safetensors",
                                      {}, TestOptions());
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  Io io = ReadIo(GetParam());
  auto out = (*net)->Forward(io.input);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  auto logits = (*out)[0].cpu();
  ASSERT_EQ(logits.sizes(), io.logits.sizes());
  const double max_err = (logits - io.logits).abs().max().item<double>();
  const double agree = logits.argmax(1).to(torch::kUInt8).eq(io.labels).to(torch::kFloat64).mean().item<double>();
  RecordProperty("max_abs_err", std::to_string(max_err));
  std::printf("[%s] max |logit - reference| = %.3g, label agreement = %.6f\n", GetParam().c_str(), max_err, agree);
  EXPECT_LT(max_err, 1e-3);
  EXPECT_GE(agree, 0.9999);
}

TEST_P(ParityTest, DeepSupervisionHeadsRunOnRequest) {
  auto net = Network::FromWeightsFile(std::string(UPP_FIXTURES_DIR) + "/" + GetParam() + "_small_weights.safetensors",
                                      {}, TestOptions());
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  Io io = ReadIo(GetParam());
  auto out = (*net)->Forward(io.input, /*deep_supervision=*/true);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), 3u);
  const auto& c = (*net)->config();
  auto g = c.StageGrid(0);
  // out2 sits on decoder3's output (the stem grid), out3 on decoder4's (half of it).
  EXPECT_EQ((*out)[1].sizes().vec(), (std::vector<int64_t>{io.input.size(0), c.num_classes, g[0], g[1], g[2]}));
  EXPECT_EQ((*out)[2].sizes().vec(),
            (std::vector<int64_t>{io.input.size(0), c.num_classes, g[0] / 2, g[1] / 2, g[2] / 2}));
  // The main output is the same with or without the extra heads.
  EXPECT_LT(((*out)[0].cpu() - io.logits).abs().max().item<double>(), 1e-3);
}

// bfloat16 convolutions (float32 elsewhere) against float32. Measured on these
// random-weight fixtures: 99.5-99.8 % label agreement (max |dlogit| 0.05-0.17),
// short of the 99.9 % the foundation issue asks of a bf16 path, so bf16 stays
// opt-in; this guards against it getting worse.
TEST_P(ParityTest, BFloat16AgreesWithFloat32) {
  const CpuFeatures& cpu = DetectCpuFeatures();
  if (TestOptions().device.is_cpu() && !cpu.bf16_convolutions)
    GTEST_SKIP() << "no bfloat16 on this CPU: " << DescribeCpuFeatures(cpu);
  const std::string weights = std::string(UPP_FIXTURES_DIR) + "/" + GetParam() + "_small_weights.safetensors";
  auto fp32 = Network::FromWeightsFile(weights, {}, TestOptions());
  auto bf16 = Network::FromWeightsFile(weights, {}, TestOptions(Precision::kBFloat16));
  ASSERT_TRUE(fp32.ok() && bf16.ok());
  Io io = ReadIo(GetParam());
  auto a = (*fp32)->Forward(io.input);
  auto b = (*bf16)->Forward(io.input);
  ASSERT_TRUE(a.ok() && b.ok());
  auto la = (*a)[0].cpu(), lb = (*b)[0].cpu();
  EXPECT_EQ(lb.scalar_type(), torch::kFloat32);
  const double agree = la.argmax(1).eq(lb.argmax(1)).to(torch::kFloat64).mean().item<double>();
  const double max_err = (la - lb).abs().max().item<double>();
  std::printf("[%s] bf16 vs fp32: label agreement %.6f, max |dlogit| %.3g\n", GetParam().c_str(), agree, max_err);
  EXPECT_GE(agree, 0.99);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::Values("synapse", "acdc", "lung", "tumor"));

TEST(NetworkTest, RejectsWrongInputShapeWithMessage) {
  auto net = Network::FromWeightsFile(std::string(UPP_FIXTURES_DIR) + "/synapse_small_weights.safetensors");
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  auto out = (*net)->Forward(torch::zeros({1, 1, 32, 64, 32}));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("(B>=1, 1, 32, 64, 64)"), std::string::npos) << out.status().message();
  out = (*net)->Forward(torch::zeros({1, 2, 32, 64, 64}));
  EXPECT_FALSE(out.ok());
}

TEST(NetworkTest, BatchOfTwoEqualsTwoSingleWindows) {
  auto net = Network::FromWeightsFile(std::string(UPP_FIXTURES_DIR) + "/synapse_small_weights.safetensors");
  ASSERT_TRUE(net.ok());
  torch::manual_seed(3);
  auto x = torch::randn({2, 1, 32, 64, 64});
  auto both = (*net)->Forward(x);
  auto first = (*net)->Forward(x.slice(0, 0, 1));
  auto second = (*net)->Forward(x.slice(0, 1, 2));
  ASSERT_TRUE(both.ok() && first.ok() && second.ok());
  EXPECT_LT(((*both)[0].slice(0, 0, 1) - (*first)[0]).abs().max().item<double>(), 1e-4);
  EXPECT_LT(((*both)[0].slice(0, 1, 2) - (*second)[0]).abs().max().item<double>(), 1e-4);
}

}  // namespace
}  // namespace upp::model
