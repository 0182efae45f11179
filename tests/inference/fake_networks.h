// Fake "networks" with known answers and the volumes and plans they run on,
// shared by the job's and the back-resampling's tests (one test file per
// unit, the same fixtures).
#ifndef UPP_TESTS_INFERENCE_FAKE_NETWORKS_H_
#define UPP_TESTS_INFERENCE_FAKE_NETWORKS_H_

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdint>

#include "inference/job.h"
#include "preprocessing/plan.h"
#include "tests/testing/volumes.h"

namespace upp::testing {

// A plan that changes nothing: unit spacing, no normalisation, no crop.
inline preprocessing::Plan IdentityPlan(std::array<int64_t, 3> patch, int classes) {
  preprocessing::Plan plan;
  plan.target_spacing = {1.0, 1.0, 1.0};
  plan.patch = patch;
  plan.num_classes = classes;
  plan.normalization[0].scheme = preprocessing::ChannelNormalization::Scheme::kNone;
  plan.crop = preprocessing::CropMode::kNone;
  return plan;
}

// A "network" whose answer depends on the whole window (through its mean) as
// well as on each voxel, with many classes: overlapping windows disagree, so
// the stitched probabilities are a real blend and label borders are ragged.
inline inference::BatchRunner WindowDependentNet(int64_t classes, std::array<int64_t, 3> patch) {
  return [=](const float* in, int64_t batch, float* out) {
    const int64_t n = patch[0] * patch[1] * patch[2];
    torch::Tensor x = torch::from_blob(const_cast<float*>(in), {batch, 1, n});
    torch::Tensor mean = x.mean(2, /*keepdim=*/true);
    torch::Tensor k = torch::arange(classes, torch::kFloat).view({1, classes, 1});
    torch::from_blob(out, {batch, classes, n})
        .copy_(2 * torch::sin(0.7 * k + 3 * x) + 0.1 * k * x + 0.5 * torch::sin(k * mean * 5));
    return absl::OkStatus();
  };
}

// A smooth random-looking field with a zero border (so the crop matters).
inline imageio::Volume WavyVolume(std::array<int64_t, 3> size_xyz, std::array<double, 3> spacing) {
  return VolumeFrom(size_xyz, spacing, [&](int64_t x, int64_t y, int64_t z) {
    const bool border = x < 2 || y < 3 || z < 1 || x >= size_xyz[0] - 1;
    return border ? 0.0
                  : std::sin(0.31 * x * spacing[0]) + std::cos(0.23 * y * spacing[1]) +
                        0.8 * std::sin(0.17 * z * spacing[2] + 0.05 * x);
  });
}

}  // namespace upp::testing

#endif  // UPP_TESTS_INFERENCE_FAKE_NETWORKS_H_
