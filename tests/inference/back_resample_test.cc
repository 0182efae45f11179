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

// A box of the grid (a label subset's region, a body crop's box): every
// class is resampled along the last axis and its argmax taken in one pass on
// the CPU (back_resample.cc, LastAxisArgmax); the labels are still those of
// the shortcut and of the whole grid's run inside the box, up to float
// near-ties. 300 classes take several slabs: their shared source slices were
// once normalised twice (687 voxels differed).
TEST(BackResample, BoxedFullResamplingEqualsTheShortcut) {
  for (const int classes : {6, 300}) {  // uint8 and int32 labels; one slab and several
    SCOPED_TRACE(classes);
    Plan plan = IdentityPlan({8, 16, 16}, classes);
    plan.target_spacing = {1.5, 1.5, 1.5};
    plan.transpose = {2, 0, 1};
    plan.crop = preprocessing::CropMode::kNone;
    const imageio::Volume v = WavyVolume({70, 52, 24}, {1.1, 1.3, 1.7});
    JobOptions fast, full;
    fast.region = full.region = preprocessing::VoxelBox{{{3, 20}, {10, 40}, {12, 55}}};  // (z, y, x)
    fast.back_resampling = BackResampling::kBordersOnly;
    full.back_resampling = BackResampling::kFull;
    auto a = SegmentVolume(v, plan, WindowDependentNet(classes, plan.patch), 3, fast);
    StageTimes times;
    auto b = SegmentVolume(v, plan, WindowDependentNet(classes, plan.patch), 3, full, &times);
    // The whole grid (no box), the shortcut's way: the box's labels are its.
    JobOptions whole_options;
    whole_options.back_resampling = BackResampling::kBordersOnly;
    auto c = SegmentVolume(v, plan, WindowDependentNet(classes, plan.patch), 3, whole_options);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status() << b.status() << c.status();
    ASSERT_EQ(a->labels.size(), b->labels.size());
    int64_t wrong = 0, in_box = 0, a_vs_whole = 0, b_vs_whole = 0;
    std::set<uint16_t> seen;
    for (size_t i = 0; i < a->labels.size(); ++i) {
      wrong += a->labels[i] != b->labels[i];
      const int64_t x = static_cast<int64_t>(i) % 70, y = static_cast<int64_t>(i) / 70 % 52,
                    z = static_cast<int64_t>(i) / (70 * 52);
      if (x >= 12 && x < 55 && y >= 10 && y < 40 && z >= 3 && z < 20) {
        ++in_box;
        seen.insert(b->labels[i]);
        a_vs_whole += a->labels[i] != c->labels[i];
        b_vs_whole += b->labels[i] != c->labels[i];
      }
    }
    EXPECT_GT(in_box, 0);
    EXPECT_LE(a_vs_whole, 2);
    EXPECT_LE(b_vs_whole, 2);
    EXPECT_LE(wrong, 2);
    EXPECT_GE(seen.size(), 4u) << "the box should have many borders";
    for (int k = 0; k < classes; ++k) EXPECT_NEAR(a->stats[k].voxels, b->stats[k].voxels, 2) << k;
    EXPECT_GT(times.resample_back, 0);
  }
}

}  // namespace
}  // namespace upp::inference
