// Window positions, the Gaussian importance and the argmax (inference/windows.h)
// against nnU-Net's formulas and torch.
#include "inference/windows.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

namespace upp::inference {
namespace {

TEST(Windows, StartsMatchNnUnet) {
  // Expected values: nnU-Net v1's compute_steps_for_sliding_window evaluated
  // with numpy (including its round-half-to-even, e.g. 16.5 -> 16).
  struct Case {
    int64_t size, patch;
    double step;
    std::vector<int64_t> starts;
  };
  const Case cases[] = {
      {64, 64, 0.5, {0}},
      {100, 64, 0.5, {0, 18, 36}},
      {128, 64, 0.5, {0, 32, 64}},
      {97, 64, 0.5, {0, 16, 33}},
      {301, 128, 0.5, {0, 58, 115, 173}},
      {257, 128, 0.5, {0, 43, 86, 129}},
      {256, 128, 1, {0, 128}},
      {130, 128, 0.5, {0, 2}},
      {200, 64, 0.25, {0, 15, 30, 45, 60, 76, 91, 106, 121, 136}},
      {65, 64, 0.5, {0, 1}},
  };
  for (const auto& c : cases) EXPECT_EQ(WindowStarts(c.size, c.patch, c.step), c.starts) << c.size << " " << c.patch;
}

TEST(Windows, GaussianIsSymmetricWithMaxOne) {
  const std::array<int64_t, 3> patch{8, 16, 12};
  torch::Tensor g = GaussianImportance(patch, 0.125);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{8, 16, 12}));
  EXPECT_FLOAT_EQ(g.max().item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(g[4][8][6].item<float>(), 1.0f);  // centre = patch / 2
  EXPECT_GT(g.min().item<float>(), 0.0f);
  // Mirror-symmetric about the centre along each axis.
  torch::Tensor inner = g.narrow(0, 1, 7).narrow(1, 1, 15).narrow(2, 1, 11);
  for (int64_t a = 0; a < 3; ++a) EXPECT_LT((inner - inner.flip({a})).abs().max().item<float>(), 1e-7);
  // Separable: g(d, h, w) = g(d, c, c) g(c, h, c) g(c, c, w).
  torch::Tensor prod = g.select(1, 8).select(1, 6).view({8, 1, 1}) * g.select(0, 4).select(1, 6).view({1, 16, 1}) *
                       g.select(0, 4).select(0, 8).view({1, 1, 12});
  EXPECT_LT((prod - g).abs().max().item<float>(), 1e-6);
  // sigma = patch / 8: one sigma from the centre along W the weight is e^-1/2.
  EXPECT_NEAR(g[4][8][6 + 1].item<float>() / 1.0f, std::exp(-1.0 / (2 * 1.5 * 1.5)), 1e-6);
}

TEST(Argmax, EqualsTorchArgmax) {
  torch::manual_seed(5);
  torch::Tensor p = torch::randn({14, 3, 9, 7});
  p[5][1][2][3] = p[2][1][2][3];  // a tie: torch picks the first
  p[5][1][2][3] += 10;
  p[2][1][2][3] += 10;
  for (auto dtype : {torch::kByte, torch::kInt}) {
    torch::Tensor mine = ArgmaxChannels(p, dtype);
    EXPECT_EQ(mine.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(mine.to(torch::kLong), p.argmax(0)));
  }
}

// --- the job, with fake networks ---

// A pointwise "network": class k's logit is -4 (x - k)^2 for the normalised
// intensity x, so the answer at every voxel depends only on that voxel. It is
// translation- and flip-equivariant, so stitching and mirroring must not
// change anything.
}  // namespace
}  // namespace upp::inference
