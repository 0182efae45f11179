// inference/stitch.h against ATen's formulation (softmax over classes,
// un-mirror, weight, add), for every variant this CPU runs.
#include "inference/stitch.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

namespace upp::inference {
namespace {

struct Case {
  int64_t classes;
  std::array<int64_t, 3> patch;
};

// What job.cc computes on a GPU: softmax(0), flip, weight.
torch::Tensor Expected(const torch::Tensor& logits, const std::array<bool, 3>& flip, const torch::Tensor& weight) {
  std::vector<int64_t> dims;
  for (int a = 0; a < 3; ++a)
    if (flip[a]) dims.push_back(1 + a);
  torch::Tensor p = logits.softmax(0);
  if (!dims.empty()) p = p.flip(dims);
  return p * weight;
}

AccumulatorWindow WindowOf(const torch::Tensor& acc, const std::array<int64_t, 3>& at) {
  torch::Tensor v = acc;
  for (int a = 0; a < 3; ++a) v = v.narrow(1 + a, at[a], 1);
  AccumulatorWindow w;
  w.data = v.data_ptr();
  w.half = acc.scalar_type() == torch::kHalf;
  w.class_stride = acc.stride(0);
  w.d_stride = acc.stride(1);
  w.h_stride = acc.stride(2);
  return w;
}

// Runs one case on accumulators already holding values; returns the largest
// difference from ATen's answer over the whole accumulator tensor (so writes
// outside the window count too).
double MaxError(const std::string& variant, const Case& c, const std::array<bool, 3>& flip, torch::ScalarType type) {
  torch::manual_seed(c.classes * 1000 + c.patch[2] + flip[0] + 2 * flip[1] + 4 * flip[2]);
  const auto& p = c.patch;
  // Logits up to +-60: exp would overflow without the max subtracted.
  torch::Tensor logits = torch::randn({c.classes, p[0], p[1], p[2]}) * 20;
  torch::Tensor weight = torch::rand({p[0], p[1], p[2]});
  const std::array<int64_t, 3> at{1, 2, 3};
  torch::Tensor acc = torch::rand({c.classes, p[0] + 3, p[1] + 4, p[2] + 5}).to(type);
  torch::Tensor expected = acc.to(torch::kFloat);
  expected.narrow(1, at[0], p[0]).narrow(2, at[1], p[1]).narrow(3, at[2], p[2]).add_(Expected(logits, flip, weight));
  expected = expected.to(type).to(torch::kFloat);  // float16 rounds once, after the addition
  internal::AddSoftmaxWindowWith(variant, logits.data_ptr<float>(), c.classes, p, flip, weight.data_ptr<float>(),
                                 WindowOf(acc, at));
  return (acc.to(torch::kFloat) - expected).abs().max().item<double>();
}

TEST(Stitch, EveryVariantAddsWhatAtenComputes) {
  const std::vector<std::string> variants = internal::StitchVariants();
  ASSERT_FALSE(variants.empty());
  EXPECT_EQ(variants.back(), "baseline");
  // Rows shorter than a vector, and longer than one chunk of the kernel.
  const Case cases[] = {{3, {3, 4, 37}}, {14, {2, 3, 600}}, {2, {2, 2, 1}}};
  for (const std::string& variant : variants) {
    for (const Case& c : cases) {
      for (int f = 0; f < 8; ++f) {
        const std::array<bool, 3> flip{(f & 1) != 0, (f & 2) != 0, (f & 4) != 0};
        SCOPED_TRACE(variant + ", " + std::to_string(c.classes) + " classes, width " + std::to_string(c.patch[2]) +
                     ", flips " + std::to_string(f));
        // float32: a few float ulps of values below 2.
        EXPECT_LT(MaxError(variant, c, flip, torch::kFloat), 2e-6);
        // float16: at most one rounding step apart (2^-10 at values in [1, 2)).
        EXPECT_LE(MaxError(variant, c, flip, torch::kHalf), 1.0 / 1024);
      }
    }
  }
}

TEST(Stitch, UnknownVariantIsRefused) {
  const float x = 0;
  EXPECT_THROW(internal::AddSoftmaxWindowWith("sse9", &x, 1, {1, 1, 1}, {false, false, false}, &x, {}),
               std::invalid_argument);
}

}  // namespace
}  // namespace upp::inference
