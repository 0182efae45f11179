// The two ways back to the input grid (back_resample.h), driven through the
// job with fake networks whose stitched probabilities have ragged borders.
#include "inference/back_resample.h"

#include <gtest/gtest.h>

#include <set>

#include "inference/job.h"
#include "preprocessing/plan.h"
#include "tests/inference/fake_networks.h"

namespace upp::inference {
namespace {

using preprocessing::Plan;
using upp::testing::IdentityPlan;
using upp::testing::WavyVolume;
using upp::testing::WindowDependentNet;

TEST(BackResample, ShortcutEqualsFullResampling) {
  // Finish() on the CPU interpolates class probabilities only where source
  // labels disagree; it must give the labels of resampling everything.
  struct Case {
    std::array<int64_t, 3> size;
    std::array<double, 3> spacing;
    std::array<int, 3> transpose;
    int classes;
    AccumulatorPrecision acc;
  };
  const Case cases[] = {
      {{61, 47, 13}, {0.7, 0.9, 4.0}, {0, 1, 2}, 6, AccumulatorPrecision::kFloat32},  // nearest along z
      {{61, 47, 13}, {0.7, 0.9, 4.0}, {0, 1, 2}, 6, AccumulatorPrecision::kFloat16},
      {{40, 35, 30}, {1.1, 1.3, 1.7}, {2, 0, 1}, 5, AccumulatorPrecision::kFloat32},    // trilinear, transposed
      {{33, 29, 17}, {1.2, 0.8, 2.1}, {1, 2, 0}, 300, AccumulatorPrecision::kFloat32},  // labels beyond uint8
  };
  for (const auto& c : cases) {
    Plan plan = IdentityPlan({8, 16, 16}, c.classes);
    plan.target_spacing = {1.5, 1.5, 1.5};
    plan.transpose = c.transpose;
    plan.crop = preprocessing::CropMode::kNonzero;
    const imageio::Volume v = WavyVolume(c.size, c.spacing);
    JobOptions fast, full;
    fast.accumulator = full.accumulator = c.acc;
    fast.back_resampling = BackResampling::kBordersOnly;
    full.back_resampling = BackResampling::kFull;
    StageTimes times;
    auto a = SegmentVolume(v, plan, WindowDependentNet(c.classes, plan.patch), 3, fast, &times);
    auto b = SegmentVolume(v, plan, WindowDependentNet(c.classes, plan.patch), 3, full);
    JobOptions automatic;
    automatic.accumulator = c.acc;
    auto d = SegmentVolume(v, plan, WindowDependentNet(c.classes, plan.patch), 3, automatic);
    ASSERT_TRUE(a.ok() && b.ok() && d.ok()) << a.status() << b.status() << d.status();
    int64_t auto_wrong = 0;
    for (size_t i = 0; i < b->labels.size(); ++i) auto_wrong += d->labels[i] != b->labels[i];
    EXPECT_LE(auto_wrong, 2);
    ASSERT_EQ(a->labels.size(), b->labels.size());
    int64_t wrong = 0;
    std::set<uint16_t> seen;
    for (size_t i = 0; i < a->labels.size(); ++i) {
      wrong += a->labels[i] != b->labels[i];
      seen.insert(b->labels[i]);
    }
    // Float rounding may flip an exact near-tie; nothing else may differ.
    EXPECT_LE(wrong, 2) << c.classes << " classes";
    EXPECT_GE(seen.size(), 4u) << "the case should have many borders";
    for (int k = 0; k < c.classes; ++k) EXPECT_NEAR(a->stats[k].voxels, b->stats[k].voxels, 2) << k;
    EXPECT_GT(times.resample_back, 0);
  }
}

}  // namespace
}  // namespace upp::inference
