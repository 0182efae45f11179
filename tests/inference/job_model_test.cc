// The pipeline end to end with the real network: the synapse-small fixture
// weights on an odd-sized, anisotropic synthetic volume.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "inference/job.h"
#include "inference/model_runner.h"
#include "model/cpu_threads.h"
#include "model/window_runner.h"

namespace upp::inference {
namespace {

std::string Fixture(const std::string& name) { return std::string(UPP_FIXTURES_DIR) + "/" + name; }

TEST(PipelineWithModel, SynapseSmallOnAnOddAnisotropicVolume) {
  model::ConfigureCpuThreads(0);
  auto runner = model::WindowRunner::FromWeightsFile(Fixture("synapse_small_weights.safetensors"));
  ASSERT_TRUE(runner.ok()) << runner.status().ToString();
  const auto& config = (*runner)->config();
  preprocessing::Plan plan = preprocessing::DefaultCtPlan(config.num_classes, config.patch);
  plan.target_spacing = {4.0, 2.0, 2.0};

  // 257 x 301 x 97 voxels (x, y, z) of 0.78 x 0.78 x 2.5 mm: anisotropy 3.2,
  // so z is resampled by nearest neighbour, in-plane linearly.
  imageio::Volume v;
  v.geometry.size = {257, 301, 97};
  v.geometry.spacing = {0.78, 0.78, 2.5};
  v.geometry.origin = {-100.0, -117.0, -300.0};
  v.geometry.direction = {1, 0, 0, 0, 0, 1, 0, -1, 0};  // coronal slices
  v.voxels.resize(v.geometry.NumVoxels());
  for (int64_t z = 0; z < 97; ++z)
    for (int64_t y = 0; y < 301; ++y)
      for (int64_t x = 0; x < 257; ++x) {
        const double r = std::hypot(x - 128.0, (y - 150.0) * 0.8);
        v.voxels[(z * 301 + y) * 257 + x] = r < 100 ? 40.0f + 30.0f * std::sin(0.1 * x + 0.05 * z) : -1000.0f;
      }
  const imageio::Geometry geometry = v.geometry;

  auto job = SegmentationJob::Create(v, plan);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ((*job)->network_grid(), (std::array<int64_t, 3>{61, 117, 100}));
  EXPECT_EQ((*job)->num_windows(), 27);

  StageTimes times;
  auto one = SegmentVolume(v, plan, inference::RunnerFor(**runner), 1, {}, &times);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->geometry.size, geometry.size);
  EXPECT_EQ(one->geometry.spacing, geometry.spacing);
  EXPECT_EQ(one->geometry.origin, geometry.origin);
  EXPECT_EQ(one->geometry.direction, geometry.direction);
  ASSERT_EQ(static_cast<int64_t>(one->labels.size()), geometry.NumVoxels());
  int64_t total = 0, foreground = 0;
  for (const auto& s : one->stats) {
    total += s.voxels;
    if (s.value > 0) foreground += s.voxels;
  }
  EXPECT_EQ(total, geometry.NumVoxels());
  for (uint16_t l : one->labels) ASSERT_LT(l, config.num_classes);
  // Random-weight logits are not flat: more than one class appears.
  int classes_seen = 0;
  for (const auto& s : one->stats) classes_seen += s.voxels > 0;
  EXPECT_GT(classes_seen, 1);

  // Batches of 4 give the same labels (up to float ties at a few voxels).
  auto four = SegmentVolume(std::move(v), plan, inference::RunnerFor(**runner), 4);
  ASSERT_TRUE(four.ok()) << four.status();
  int64_t differ = 0;
  for (size_t i = 0; i < one->labels.size(); ++i) differ += one->labels[i] != four->labels[i];
  EXPECT_LE(differ, geometry.NumVoxels() / 10000) << differ;
}

}  // namespace
}  // namespace upp::inference
