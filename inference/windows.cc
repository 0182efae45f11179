#include "inference/windows.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "imageio/checked_math.h"

namespace upp::inference {

int64_t CountWindowStarts(int64_t size, int64_t patch, double step) {
  if (size <= patch) return 1;
  const auto steps =
      imageio::CheckedFloor(std::ceil(static_cast<double>(size - patch) / (static_cast<double>(patch) * step)));
  return steps ? imageio::OrMax(imageio::CheckedAdd(*steps, 1)) : std::numeric_limits<int64_t>::max();
}

std::vector<int64_t> WindowStarts(int64_t size, int64_t patch, double step) {
  const double target_step = static_cast<double>(patch) * step;
  const int64_t steps = static_cast<int64_t>(std::ceil(static_cast<double>(size - patch) / target_step)) + 1;
  std::vector<int64_t> starts(std::max<int64_t>(steps, 1), 0);
  if (steps > 1) {
    const double actual = static_cast<double>(size - patch) / static_cast<double>(steps - 1);
    for (int64_t i = 0; i < steps; ++i)
      starts[i] = static_cast<int64_t>(std::nearbyint(actual * static_cast<double>(i)));
  }
  return starts;
}

std::array<torch::Tensor, 3> GaussianFactors(const std::array<int64_t, 3>& patch, double sigma_scale) {
  // A separable product of 1-D Gaussians equals nnU-Net's gaussian_filter of a
  // centred delta (truncated at 4 sigma = patch / 2, i.e. not truncated inside
  // the patch) after normalising to max 1.
  std::array<torch::Tensor, 3> factors;
  for (int a = 0; a < 3; ++a) {
    const double sigma = static_cast<double>(patch[a]) * sigma_scale;
    const torch::Tensor d = torch::arange(patch[a], torch::kDouble) - static_cast<double>(patch[a] / 2);
    torch::Tensor g = torch::exp(-(d * d) / (2.0 * sigma * sigma));
    factors[a] = (g / g.max()).clamp_min(1e-12).to(torch::kFloat);
  }
  return factors;
}

torch::Tensor GaussianImportance(const std::array<int64_t, 3>& patch, double sigma_scale) {
  const auto f = GaussianFactors(patch, sigma_scale);
  return f[0].view({-1, 1, 1}) * f[1].view({1, -1, 1}) * f[2].view({1, 1, -1});
}

torch::Tensor ArgmaxChannels(const torch::Tensor& p, torch::ScalarType dtype) {
  torch::Tensor best = p[0].clone();
  torch::Tensor index = torch::zeros(best.sizes(), best.options().dtype(dtype));
  for (int64_t k = 1; k < p.size(0); ++k) {
    const torch::Tensor plane = p[k];
    index.masked_fill_(plane > best, k);
    torch::maximum_out(best, best, plane);
  }
  return index;
}

}  // namespace upp::inference
