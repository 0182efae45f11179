// The inference job on small synthetic volumes with known answers, using fake
// "networks" whose answers are known too.
#include "inference/job.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "inference/windows.h"
#include "preprocessing/plan.h"
#include "preprocessing/resampling.h"
#include "tests/inference/fake_networks.h"

namespace upp::inference {
namespace {

using preprocessing::ChannelNormalization;
using preprocessing::DefaultCtPlan;
using preprocessing::Plan;
using upp::testing::IdentityPlan;
using upp::testing::WavyVolume;
using upp::testing::WindowDependentNet;

BatchRunner PointwiseNet(int64_t classes, int64_t channels, std::array<int64_t, 3> patch) {
  return [=](const float* in, int64_t batch, float* out) {
    const int64_t n = patch[0] * patch[1] * patch[2];
    torch::Tensor x = torch::from_blob(const_cast<float*>(in), {batch, channels, n}).select(1, 0);
    torch::Tensor k = torch::arange(classes, torch::kFloat).view({1, classes, 1});
    torch::from_blob(out, {batch, classes, n}).copy_(-4 * (x.unsqueeze(1) - k).pow(2));
    return absl::OkStatus();
  };
}

// A volume with values 0..3 in blocks (z, y, x sizes), unit spacing.
imageio::Volume BlockVolume(std::array<int64_t, 3> size_xyz, std::array<double, 3> spacing = {1, 1, 1}) {
  imageio::Volume v;
  v.geometry.size = size_xyz;
  v.geometry.spacing = spacing;
  v.geometry.origin = {-12.5, 40.0, 7.0};
  // A rotation about z, to see that the direction is carried through.
  v.geometry.direction = {0.6, -0.8, 0, 0.8, 0.6, 0, 0, 0, 1};
  v.voxels.resize(v.geometry.NumVoxels());
  for (int64_t z = 0; z < size_xyz[2]; ++z)
    for (int64_t y = 0; y < size_xyz[1]; ++y)
      for (int64_t x = 0; x < size_xyz[0]; ++x)
        v.voxels[(z * size_xyz[1] + y) * size_xyz[0] + x] =
            static_cast<float>((x * 4 / size_xyz[0] + y * 2 / size_xyz[1] + z * 3 / size_xyz[2]) % 4);
  return v;
}

void ExpectSameGeometry(const imageio::Geometry& a, const imageio::Geometry& b) {
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.spacing, b.spacing);
  EXPECT_EQ(a.origin, b.origin);
  EXPECT_EQ(a.direction, b.direction);
}

TEST(Job, StitchingPointwiseWindowsReturnsThem) {
  // No resampling, no crop: the label map must be the block values exactly,
  // whatever the overlap (windows 8x16x16 over 21x37x30, padded D axis).
  for (const auto& transpose : {std::array<int, 3>{0, 1, 2}, std::array<int, 3>{2, 0, 1}}) {
    Plan plan = IdentityPlan({8, 16, 16}, 4);
    plan.transpose = transpose;
    imageio::Volume v = BlockVolume({30, 37, 5});
    const imageio::Volume copy = v;
    auto result = SegmentVolume(std::move(v), plan, PointwiseNet(4, 1, plan.patch), 3);
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectSameGeometry(result->geometry, copy.geometry);
    ASSERT_EQ(result->labels.size(), copy.voxels.size());
    int64_t wrong = 0;
    for (size_t i = 0; i < copy.voxels.size(); ++i) wrong += result->labels[i] != copy.voxels[i];
    EXPECT_EQ(wrong, 0);
    int64_t total = 0;
    for (const auto& s : result->stats) total += s.voxels;
    EXPECT_EQ(total, copy.geometry.NumVoxels());
  }
}

TEST(Job, MirroringAFlipEquivariantNetChangesNothing) {
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  imageio::Volume v = BlockVolume({23, 19, 17});
  auto plain = SegmentVolume(v, plan, PointwiseNet(4, 1, plan.patch), 2);
  JobOptions mirrored;
  mirrored.mirror_axes = std::vector<int>{0, 1, 2};
  auto job = SegmentationJob::Create(v, plan, mirrored);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ((*job)->num_variants(), 8);
  auto flipped = SegmentVolume(v, plan, PointwiseNet(4, 1, plan.patch), 5, mirrored);
  ASSERT_TRUE(plain.ok() && flipped.ok());
  EXPECT_EQ(plain->labels, flipped->labels);
}

TEST(Job, ItemsInAnyOrderFromAnyThread) {
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  imageio::Volume v = BlockVolume({40, 33, 20});
  const imageio::Volume copy = v;
  auto job_or = SegmentationJob::Create(std::move(v), plan, {});
  ASSERT_TRUE(job_or.ok());
  SegmentationJob& job = **job_or;
  BatchRunner net = PointwiseNet(4, 1, plan.patch);
  std::vector<std::thread> threads;
  std::atomic<int> completions{0};
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      std::vector<float> in(job.input_floats()), out(job.output_floats());
      for (int64_t i = job.num_items() - 1 - t; i >= 0; i -= 3) {  // reverse order
        ASSERT_TRUE(job.GetInput(i, in.data()).ok());
        ASSERT_TRUE(net(in.data(), 1, out.data()).ok());
        auto done = job.AddOutput(i, out.data());
        ASSERT_TRUE(done.ok());
        completions += *done;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(completions.load(), 1);
  EXPECT_TRUE(job.complete());
  auto result = job.Finish();
  ASSERT_TRUE(result.ok());
  for (size_t i = 0; i < copy.voxels.size(); ++i) ASSERT_EQ(result->labels[i], copy.voxels[i]) << i;
  EXPECT_EQ(job.Finish().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Job, MisuseGetsClearStatuses) {
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  auto job = SegmentationJob::Create(BlockVolume({20, 20, 10}), plan, {});
  ASSERT_TRUE(job.ok());
  std::vector<float> out((*job)->output_floats(), 0.0f);
  EXPECT_EQ((*job)->Finish().status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*job)->AddOutput(0, out.data()).ok());
  EXPECT_EQ((*job)->AddOutput(0, out.data()).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*job)->AddOutput((*job)->num_items(), out.data()).status().code(), absl::StatusCode::kOutOfRange);

  imageio::Volume two = BlockVolume({20, 20, 10});
  two.channels = 2;
  two.voxels.resize(two.voxels.size() * 2);
  auto bad = SegmentationJob::Create(std::move(two), plan, {});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("input channel"), std::string::npos);

  imageio::Volume nan_spacing = BlockVolume({20, 20, 10});
  nan_spacing.geometry.spacing[1] = std::nan("");
  EXPECT_EQ(SegmentationJob::Create(std::move(nan_spacing), plan, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  JobOptions bad_device;
  bad_device.device = "gpu7";
  EXPECT_EQ(SegmentationJob::Create(BlockVolume({20, 20, 10}), plan, bad_device).status().code(),
            absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    bad_device.device = "cuda:0";
    EXPECT_EQ(SegmentationJob::Create(BlockVolume({20, 20, 10}), plan, bad_device).status().code(),
              absl::StatusCode::kUnavailable);
  }
  JobOptions bad_step;
  bad_step.step = 0.0;
  auto s = SegmentationJob::Create(BlockVolume({20, 20, 10}), plan, bad_step).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("plan.step"), std::string::npos) << s;
}

TEST(Job, ResamplingRoundTripKeepsGeometryAndLabels) {
  // Anisotropic input (0.7 x 0.9 x 4 mm) resampled to 1.5 mm isotropic and
  // back: big blocks survive except at their borders.
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  plan.target_spacing = {1.5, 1.5, 1.5};
  for (auto acc : {AccumulatorPrecision::kFloat32, AccumulatorPrecision::kFloat16}) {
    imageio::Volume v = BlockVolume({61, 47, 13}, {0.7, 0.9, 4.0});
    const imageio::Volume copy = v;
    JobOptions options;
    options.accumulator = acc;
    auto job = SegmentationJob::Create(v, plan, options);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ((*job)->network_grid(), (std::array<int64_t, 3>{35, 28, 28}));
    auto result = SegmentVolume(std::move(v), plan, PointwiseNet(4, 1, plan.patch), 4, options);
    ASSERT_TRUE(result.ok()) << result.status();
    ExpectSameGeometry(result->geometry, copy.geometry);
    int64_t wrong = 0;
    for (size_t i = 0; i < copy.voxels.size(); ++i) wrong += result->labels[i] != copy.voxels[i];
    EXPECT_LT(static_cast<double>(wrong) / copy.voxels.size(), 0.05) << wrong;
    double ml = 0;
    for (const auto& s : result->stats) {
      EXPECT_NEAR(s.volume_ml, s.voxels * 0.7 * 0.9 * 4.0 / 1000, 1e-9);
      ml += s.volume_ml;
    }
    EXPECT_NEAR(ml, copy.geometry.NumVoxels() * 0.7 * 0.9 * 4.0 / 1000, 1e-6);
  }
}

TEST(Job, CropsToNonzeroAndPastesBackAsBackground) {
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  plan.crop = preprocessing::CropMode::kNonzero;
  imageio::Volume v = BlockVolume({30, 30, 12});
  // Zero everything outside x in [5, 20), y in [3, 28), z in [2, 9); inside
  // values 1..3 (no zeros), so the crop is exactly that box.
  for (int64_t z = 0; z < 12; ++z)
    for (int64_t y = 0; y < 30; ++y)
      for (int64_t x = 0; x < 30; ++x) {
        float& val = v.voxels[(z * 30 + y) * 30 + x];
        const bool inside = x >= 5 && x < 20 && y >= 3 && y < 28 && z >= 2 && z < 9;
        val = inside ? 1.0f + static_cast<float>((x + y) % 3) : 0.0f;
      }
  const imageio::Volume copy = v;
  auto job = SegmentationJob::Create(v, plan, {});
  ASSERT_TRUE(job.ok());
  EXPECT_EQ((*job)->network_grid(), (std::array<int64_t, 3>{7, 25, 15}));
  auto result = SegmentVolume(std::move(v), plan, PointwiseNet(4, 1, plan.patch));
  ASSERT_TRUE(result.ok());
  for (size_t i = 0; i < copy.voxels.size(); ++i) ASSERT_EQ(result->labels[i], copy.voxels[i]) << i;
}

TEST(Job, CtAndZScoreNormalisation) {
  // A net that reports the normalised value: class = round(x) clamped, so we
  // can read the normalisation back from the labels.
  Plan plan = IdentityPlan({4, 8, 8}, 8);
  plan.normalization[0] = {ChannelNormalization::Scheme::kCT, -100, 500, 100, 100, false};
  imageio::Volume v;
  v.geometry.size = {8, 8, 4};
  v.voxels = std::vector<float>(256, -1000.0f);          // clipped to -100 -> class -2 -> 0
  for (int i = 128; i < 256; ++i) v.voxels[i] = 400.0f;  // (400 - 100) / 100 = 3
  auto result = SegmentVolume(v, plan, PointwiseNet(8, 1, plan.patch));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->labels[0], 0);
  EXPECT_EQ(result->labels[200], 3);

  plan.normalization[0] = {ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, false};
  result = SegmentVolume(v, plan, PointwiseNet(8, 1, plan.patch));
  ASSERT_TRUE(result.ok());
  // Two equal halves: z-scores -1 and +1 -> classes 0 and 1.
  EXPECT_EQ(result->labels[0], 0);
  EXPECT_EQ(result->labels[200], 1);
}

// A job on a GPU (JobOptions::device; the server's models[].job_device)
// preprocesses, stitches and back-resamples there: the same labels as on the
// CPU. Runs where LibTorch sees a CUDA device (deploy/gpu-check.sh).
TEST(Job, OnTheGpuGivesTheCpusLabels) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device in this LibTorch build or machine";
  for (auto acc : {AccumulatorPrecision::kFloat32, AccumulatorPrecision::kFloat16}) {
    Plan plan = IdentityPlan({8, 16, 16}, 6);
    plan.target_spacing = {1.5, 1.5, 1.5};
    plan.transpose = {2, 0, 1};
    plan.crop = preprocessing::CropMode::kNonzero;
    plan.mirror_axes = {0, 2};
    const imageio::Volume v = WavyVolume({61, 47, 13}, {0.7, 0.9, 4.0});
    JobOptions cpu, gpu;
    cpu.accumulator = gpu.accumulator = acc;
    cpu.back_resampling = BackResampling::kFull;
    gpu.device = "cuda:0";
    auto a = SegmentVolume(v, plan, WindowDependentNet(6, plan.patch), 3, cpu);
    auto b = SegmentVolume(v, plan, WindowDependentNet(6, plan.patch), 3, gpu);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    ASSERT_EQ(a->labels.size(), b->labels.size());
    int64_t wrong = 0;
    for (size_t i = 0; i < a->labels.size(); ++i) wrong += a->labels[i] != b->labels[i];
    EXPECT_LE(wrong, 2) << "float rounding may flip an exact near-tie; nothing else may differ";
    for (int k = 0; k < 6; ++k) EXPECT_NEAR(a->stats[k].voxels, b->stats[k].voxels, 2) << k;
  }
}

TEST(Job, EstimateCoversTheAccumulators) {
  Plan plan = DefaultCtPlan();
  imageio::Geometry g;
  g.size = {512, 512, 300};
  g.spacing = {0.8, 0.8, 2.5};
  const int64_t bytes = SegmentationJob::EstimateBytes(g, 1, plan);
  // 250 x 539 x 539 grid, 14 classes, float16 accumulators: ~1.9 GiB in all.
  EXPECT_GT(bytes, int64_t{250} * 539 * 539 * 14 * 2);
  EXPECT_LT(bytes, int64_t{4} << 30);
}

}  // namespace
}  // namespace upp::inference
