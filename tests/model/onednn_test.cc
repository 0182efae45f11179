// The oneDNN hot paths (model/onednn.h) against ATen in double precision.
#include "model/onednn.h"

#include <gtest/gtest.h>

#include "model/cpu_features.h"

namespace upp::model {
namespace {

// Instance norm of a channels-last volume whose channels have large means and
// small spreads (where one-pass float statistics lose digits), for channel
// counts that fill, and that do not fill, a vector register.
TEST(OnednnTest, InstanceNormMatchesDoublePrecision) {
  if (!onednn::Available()) GTEST_SKIP() << "built without oneDNN";
  for (int64_t channels : {3, 16, 17, 32}) {
    torch::manual_seed(static_cast<uint64_t>(channels));
    const auto offsets = torch::linspace(-40, 60, channels).view({1, channels, 1, 1, 1});
    const auto x =
        (torch::randn({2, channels, 24, 40, 72}) * 0.05 + offsets).contiguous(at::MemoryFormat::ChannelsLast3d);
    const auto got = onednn::InstanceNorm(x, 1e-5);
    const auto want = torch::group_norm(x.to(torch::kFloat64).contiguous(), channels, {}, {}, 1e-5);
    const double max_error = (got.to(torch::kFloat64) - want).abs().max().item<double>();
    EXPECT_LT(max_error, 2e-4) << channels << " channels";
    EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast3d));
  }
}

// Packed weights give the unpacked convolution's result, are made once per
// weight tensor and layout, and are remade when the weights change in place.
TEST(OnednnTest, PackedWeightsAreReusedAndFollowTheWeights) {
  if (!onednn::Available()) GTEST_SKIP() << "built without oneDNN";
  torch::manual_seed(3);
  const auto cl = at::MemoryFormat::ChannelsLast3d;
  torch::Tensor x = torch::randn({1, 16, 12, 20, 20}).contiguous(cl);
  torch::Tensor w = torch::randn({32, 16, 3, 3, 3}) * 0.1;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    // bfloat16 convolutions need AVX512-BF16 or AMX (an AVX2-only CPU refuses them).
    if (dtype == torch::kBFloat16 && !DetectCpuFeatures().bf16_convolutions) continue;
    torch::Tensor wd = w.to(dtype);
    onednn::PackedWeights packed;
    const torch::Tensor plain = onednn::Conv3d(x, wd, {}, {1, 1, 1}, {1, 1, 1});
    const torch::Tensor first = onednn::Conv3d(x, wd, {}, {1, 1, 1}, {1, 1, 1}, &packed);
    const int64_t held = packed.size();
    EXPECT_EQ(held, 1) << "channels-last kernels want blocked weights: one packed copy";
    const torch::Tensor again = onednn::Conv3d(x, wd, {}, {1, 1, 1}, {1, 1, 1}, &packed);
    EXPECT_TRUE(torch::equal(plain, first));
    EXPECT_TRUE(torch::equal(plain, again));
    EXPECT_EQ(packed.size(), held) << "reused, not made again";
    {
      torch::NoGradGuard no_grad;
      wd.mul_(-1);  // the layer's weights changed in place (e.g. loaded)
    }
    const torch::Tensor negated = onednn::Conv3d(x, wd, {}, {1, 1, 1}, {1, 1, 1}, &packed);
    EXPECT_TRUE(torch::allclose(negated, -plain, 1e-5, 1e-5)) << dtype;
    packed.Clear();
    EXPECT_EQ(packed.size(), 0);
    EXPECT_TRUE(torch::equal(onednn::Conv3d(x, wd, {}, {1, 1, 1}, {1, 1, 1}, &packed), negated));
    // Another weight tensor of the same shape is packed on its own.
    const torch::Tensor other = torch::randn({32, 16, 3, 3, 3}).to(dtype);
    EXPECT_TRUE(torch::equal(onednn::Conv3d(x, other, {}, {1, 1, 1}, {1, 1, 1}, &packed),
                             onednn::Conv3d(x, other, {}, {1, 1, 1}, {1, 1, 1})));
  }
}

}  // namespace
}  // namespace upp::model
