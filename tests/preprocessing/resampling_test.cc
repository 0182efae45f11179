// Resampling and cropping (preprocessing/resampling.h) on small tensors with known answers.
#include "preprocessing/resampling.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

namespace upp::preprocessing {
namespace {

namespace F = torch::nn::functional;

TEST(Resample, LinearRampStaysARamp) {
  // f(i) = 3 i + 2 along each axis in turn; linear interpolation at source
  // coordinate s gives 3 s + 2 wherever s is inside [0, n - 1].
  for (int dim = 1; dim <= 3; ++dim) {
    std::vector<int64_t> shape{1, 4, 5, 6};
    shape[dim] = 20;
    std::vector<int64_t> view(4, 1);
    view[dim] = 20;
    torch::Tensor x = (torch::arange(20, torch::kFloat) * 3 + 2).view(view).expand(shape).contiguous();
    for (int64_t out : {7, 33, 57}) {
      std::array<int64_t, 3> size{shape[1], shape[2], shape[3]};
      size[dim - 1] = out;
      torch::Tensor y = ResampleSeparable(x, size, {Interp::kLinear, Interp::kLinear, Interp::kLinear});
      ASSERT_EQ(y.size(dim), out);
      const double scale = 20.0 / out;
      for (int64_t o = 0; o < out; ++o) {
        const double s = (o + 0.5) * scale - 0.5;
        if (s < 0 || s > 19) continue;  // clamped at the edges
        EXPECT_NEAR(y.select(dim, o).mean().item<double>(), 3 * s + 2, 1e-4) << dim << " " << out << " " << o;
        EXPECT_NEAR((y.select(dim, o).max() - y.select(dim, o).min()).item<double>(), 0, 1e-5);
      }
    }
  }
}

TEST(Resample, ConstantStaysConstant) {
  torch::Tensor x = torch::full({2, 9, 13, 11}, 7.25f);
  for (auto modes : {std::array<Interp, 3>{Interp::kLinear, Interp::kLinear, Interp::kLinear},
                     std::array<Interp, 3>{Interp::kNearest, Interp::kLinear, Interp::kLinear},
                     std::array<Interp, 3>{Interp::kLinear, Interp::kNearest, Interp::kNearest}}) {
    torch::Tensor y = ResampleSeparable(x, {20, 5, 17}, modes);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 20, 5, 17}));
    EXPECT_FLOAT_EQ(y.min().item<float>(), 7.25f);
    EXPECT_FLOAT_EQ(y.max().item<float>(), 7.25f);
  }
}

TEST(Resample, SeparableLinearEqualsTrilinear) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({3, 7, 12, 10});
  for (std::array<int64_t, 3> out : {std::array<int64_t, 3>{15, 5, 23}, {4, 31, 9}, {7, 12, 10}}) {
    torch::Tensor mine = ResampleSeparable(x, out, {Interp::kLinear, Interp::kLinear, Interp::kLinear});
    torch::Tensor ref = F::interpolate(x.unsqueeze(0), F::InterpolateFuncOptions()
                                                           .size(std::vector<int64_t>(out.begin(), out.end()))
                                                           .mode(torch::kTrilinear)
                                                           .align_corners(false))[0];
    EXPECT_LT((mine - ref).abs().max().item<float>(), 1e-5);
  }
}

TEST(Resample, NearestAlongOneAxisIsNearestExact) {
  torch::manual_seed(4);
  torch::Tensor x = torch::randn({1, 5, 6, 6});
  torch::Tensor mine = Resample1D(x, 1, 13, Interp::kNearest);
  torch::Tensor ref = F::interpolate(
      x.unsqueeze(0), F::InterpolateFuncOptions().size(std::vector<int64_t>{13, 6, 6}).mode(torch::kNearestExact))[0];
  EXPECT_TRUE(torch::equal(mine, ref));
}

TEST(Resample, RowByRowEqualsTheGatherPath) {
  // A contiguous float CPU tensor is resampled row by row along its outer
  // axes; the same values in a non-contiguous layout take index_select.
  torch::manual_seed(5);
  torch::Tensor x = torch::randn({2, 9, 17, 20});
  torch::Tensor strided = x.transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_FALSE(ResamplesRowByRow(x, 3));  // rows of one element: gathered
  for (int64_t dim : {1, 2}) {
    ASSERT_TRUE(ResamplesRowByRow(x, dim)) << dim;
    ASSERT_FALSE(ResamplesRowByRow(strided, dim)) << dim;
    for (Interp mode : {Interp::kLinear, Interp::kNearest}) {
      for (int64_t out : {4, 13, 31}) {
        torch::Tensor rows = Resample1D(x, dim, out, mode);
        torch::Tensor gather = Resample1D(strided, dim, out, mode);
        ASSERT_EQ(rows.sizes(), gather.sizes());
        EXPECT_LT((rows - gather).abs().max().item<float>(), 1e-6) << dim << " " << out;
      }
    }
  }
}

// A region of a resampling is the whole one's taps, shifted into the
// region's source box; resampling the source box through them gives the
// whole resampling's outputs there.
TEST(Resample, RegionTapsAreTheWholeOnesShifted) {
  for (Interp mode : {Interp::kLinear, Interp::kNearest}) {
    const Taps whole = ResamplingTaps(37, 90, mode);
    const Taps same = RegionTaps(37, 90, mode, {0, 90}, {0, 37});
    EXPECT_EQ(same.i0, whole.i0);
    EXPECT_EQ(same.i1, whole.i1);
    EXPECT_EQ(same.w1, whole.w1);

    const torch::Tensor x = torch::rand({2, 37, 3, 20});
    const torch::Tensor all = Resample1D(x, 1, 90, mode);
    // Outputs 30..59 read sources 12..24 at most (scale 37/90).
    const Taps part = RegionTaps(37, 90, mode, {30, 60}, {10, 26});
    const torch::Tensor region = Resample1D(x.narrow(1, 10, 16).contiguous(), 1, part, mode);
    EXPECT_TRUE(torch::equal(region, all.narrow(1, 30, 30))) << (region - all.narrow(1, 30, 30)).abs().max();
    for (int64_t o = 0; o < 30; ++o) EXPECT_EQ(part.i0[o], whole.i0[30 + o] - 10);
  }
}

TEST(Resample, ModesFollowNnUnetSeparateZ) {
  using I = Interp;
  auto m = ResamplingModes({5.0, 0.8, 0.8}, {3.0, 0.76, 0.76}, 3.0);
  EXPECT_EQ(m, (std::array<I, 3>{I::kNearest, I::kLinear, I::kLinear}));
  m = ResamplingModes({1.0, 1.0, 1.0}, {1.5, 1.5, 1.5}, 3.0);
  EXPECT_EQ(m, (std::array<I, 3>{I::kLinear, I::kLinear, I::kLinear}));
  m = ResamplingModes({1.0, 1.0, 1.0}, {1.0, 4.0, 1.0}, 3.0);  // target anisotropic
  EXPECT_EQ(m, (std::array<I, 3>{I::kLinear, I::kNearest, I::kLinear}));
  m = ResamplingModes({5.0, 5.0, 1.0}, {1.0, 1.0, 1.0}, 3.0);  // two coarse axes
  EXPECT_EQ(m, (std::array<I, 3>{I::kLinear, I::kLinear, I::kLinear}));
  EXPECT_EQ(ResampledSize({10, 100, 100}, {5.0, 0.8, 0.8}, {3.0, 0.76, 0.76}), (std::array<int64_t, 3>{17, 105, 105}));
  // 5 * 1 / 2 = 2.5 rounds to 2 (half to even, as np.round).
  EXPECT_EQ(ResampledSize({5, 7, 9}, {1, 1, 1}, {2, 2, 2}), (std::array<int64_t, 3>{2, 4, 4}));
}

TEST(Crop, NonzeroBoundingBoxMatchesBruteForce) {
  torch::manual_seed(3);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t C = 1 + trial % 3, D = 3 + trial % 5, H = 4 + trial % 7, W = 5 + trial % 11;
    // Sparse non-zeros (some trials none at all), NaN and -0.0 among them.
    torch::Tensor x = torch::zeros({C, D, H, W});
    const int points = trial % 4 == 0 ? 0 : 1 + trial % 5;
    std::array<std::array<int64_t, 2>, 3> expected{{{D, 0}, {H, 0}, {W, 0}}};
    for (int p = 0; p < points; ++p) {
      const int64_t c = torch::randint(C, {1}).item<int64_t>(), d = torch::randint(D, {1}).item<int64_t>(),
                    h = torch::randint(H, {1}).item<int64_t>(), w = torch::randint(W, {1}).item<int64_t>();
      x[c][d][h][w] = p == 1 ? std::nanf("") : 1.5f;
      const int64_t at[3] = {d, h, w};
      for (int a = 0; a < 3; ++a) expected[a] = {std::min(expected[a][0], at[a]), std::max(expected[a][1], at[a] + 1)};
    }
    x[0][D - 1][H - 1][W - 1] = x[0][D - 1][H - 1][W - 1].item<float>() == 0.0f ? -0.0f : 1.0f;
    if (points == 0) expected = {{{0, D}, {0, H}, {0, W}}};
    EXPECT_EQ(NonzeroBoundingBox(x), expected) << "trial " << trial;
    // The general (tensor) path: a non-contiguous view of the same values.
    torch::Tensor strided = x.transpose(2, 3).contiguous().transpose(2, 3);
    ASSERT_FALSE(strided.is_contiguous());
    EXPECT_EQ(NonzeroBoundingBox(strided), expected) << "trial " << trial;
  }
}

}  // namespace
}  // namespace upp::preprocessing
