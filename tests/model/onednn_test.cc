// The oneDNN hot paths (model/onednn.h) against ATen in double precision.
#include "model/onednn.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace upp::model
