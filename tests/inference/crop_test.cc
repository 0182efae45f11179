// The job's crop (plan.crop): a CT runs only the windows that touch its
// body's box (an MR is cropped to its non-zero box), the labels outside are
// background, those inside are the uncropped run's, and the job reports how
// many windows the crop saved.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "inference/job.h"
#include "inference/windows.h"
#include "preprocessing/plan.h"
#include "tests/inference/fake_networks.h"
#include "tests/testing/volumes.h"

namespace upp::inference {
namespace {

using preprocessing::ChannelNormalization;
using preprocessing::CropMode;
using preprocessing::Plan;

constexpr std::array<int64_t, 3> kPatch{8, 16, 16};

// Unit spacing (no resampling), HU clipped to [-1000, 1000] and scaled to
// [-1, 1]: the labels of PointwiseTissueNet are exact with and without a crop.
Plan CtPlan() {
  Plan plan;
  plan.target_spacing = {1.0, 1.0, 1.0};
  plan.patch = kPatch;
  plan.num_classes = 2;
  plan.normalization[0] = {ChannelNormalization::Scheme::kCT, -1000, 1000, 0, 1000, false};
  return plan;
}

// Class 1 where the (normalised) voxel is above -300 HU.
BatchRunner PointwiseTissueNet() {
  return [](const float* in, int64_t batch, float* out) {
    const int64_t n = kPatch[0] * kPatch[1] * kPatch[2];
    torch::Tensor x = torch::from_blob(const_cast<float*>(in), {batch, 1, n});
    torch::from_blob(out, {batch, 2, n}).copy_(torch::cat({torch::zeros_like(x), 40 * (x + 0.3)}, 1));
    return absl::OkStatus();
  };
}

// Air around ellipsoids of soft tissue: {centre (x, y, z), semi-axes}.
struct Blob {
  std::array<double, 3> centre, radii;
};
imageio::Volume CtWith(std::array<int64_t, 3> size_xyz, const std::vector<Blob>& blobs) {
  return testing::VolumeFrom(size_xyz, {1, 1, 1}, [&](int64_t x, int64_t y, int64_t z) {
    const std::array<double, 3> p{static_cast<double>(x), static_cast<double>(y), static_cast<double>(z)};
    for (const Blob& b : blobs) {
      double r = 0;
      for (int a = 0; a < 3; ++a) r += std::pow((p[a] - b.centre[a]) / b.radii[a], 2);
      if (r <= 1) return 40.0;
    }
    return -1000.0 + 20.0 * std::sin(0.7 * x + 0.3 * y + 1.1 * z);  // "noise" in air
  });
}

struct Outcome {
  LabelMap labels;
  CropReport report;
  int64_t windows = 0;
};
Outcome Segment(const imageio::Volume& v, const Plan& plan, std::optional<CropMode> crop = std::nullopt) {
  JobOptions options;
  options.crop = crop;
  auto job = SegmentationJob::Create(v, plan, options);
  EXPECT_TRUE(job.ok()) << job.status();
  Outcome run;
  run.report = (*job)->crop_report();
  run.windows = (*job)->num_windows();
  EXPECT_LE((*job)->num_items(), SegmentationJob::CountItems(v.geometry, plan, options));  // admission's bound
  auto labels = SegmentVolume(v, plan, PointwiseTissueNet(), 4, options);
  EXPECT_TRUE(labels.ok()) << labels.status();
  run.labels = *labels;
  return run;
}

// The voxels [begin, end) of an axis of `size` voxels all of whose windows
// (patch `patch`, step 0.5) run when those touching [box_begin, box_end) do:
// what a body crop labels when the grid is the input's (unit spacing, no
// padding).
std::array<int64_t, 2> CompleteBox(int64_t size, int64_t patch, int64_t box_begin, int64_t box_end) {
  std::array<int64_t, 2> complete{0, size};
  for (int64_t s : WindowStarts(size, patch, 0.5)) {
    if (s + patch <= box_begin) complete[0] = s + patch;  // a window left out before the box
    if (s >= box_end) complete[1] = std::min(complete[1], s);
  }
  return complete;
}

int64_t Differing(const LabelMap& a, const LabelMap& b) {
  int64_t n = 0;
  for (size_t i = 0; i < a.labels.size(); ++i) n += a.labels[i] != b.labels[i];
  return n;
}

TEST(BodyCrop, AnOffCentreBodyRunsOnlyTheWindowsAroundIt) {
  // 120 x 100 x 40 voxels; the body in the lower left (x 10..40, y 55..95).
  const auto v = CtWith({120, 100, 40}, {{{25, 75, 20}, {15, 20, 30}}});
  const Plan plan = CtPlan();
  ASSERT_EQ(plan.ResolvedCrop(), CropMode::kBody);  // the CT default
  const Outcome body = Segment(v, plan);
  const Outcome none = Segment(v, plan, CropMode::kNone);

  EXPECT_EQ(body.report.mode, CropMode::kBody);
  EXPECT_EQ(body.report.reason, "outside the body");
  // Where every window runs around the body's box (x 10..40, y 55..95).
  EXPECT_EQ(body.report.box_xyz[0], CompleteBox(120, 16, 10, 41));
  EXPECT_EQ(body.report.box_xyz[1], CompleteBox(100, 16, 55, 96));
  EXPECT_EQ(body.report.box_xyz[2], (std::array<int64_t, 2>{0, 40}));
  EXPECT_LE(body.report.box_xyz[0][1], 56);  // not the whole field
  EXPECT_GE(body.report.box_xyz[1][0], 40);
  EXPECT_EQ(none.report.mode, CropMode::kNone);
  EXPECT_EQ(none.report.windows_skipped, 0);
  EXPECT_EQ(none.report.reason, "");
  EXPECT_EQ(body.report.windows_uncropped, none.windows);
  EXPECT_LT(body.windows, none.windows / 3);
  EXPECT_EQ(body.report.windows_skipped, none.windows - body.windows);

  EXPECT_EQ(Differing(body.labels, none.labels), 0);
  EXPECT_EQ(body.labels.stats[1].voxels, none.labels.stats[1].voxels);
  EXPECT_GT(body.labels.stats[1].voxels, 0);
  EXPECT_EQ(body.labels.stats[0].voxels + body.labels.stats[1].voxels, v.geometry.NumVoxels());
}

// The `fast` mode (tile_box) tiles the body's box with windows of its own:
// fewer than the whole run's windows that touch it; a pointwise network's
// labels over the body are the whole run's, and background far from it.
TEST(BodyCrop, ATiledBodyBoxRunsWindowsOfItsOwn) {
  // 160 x 100 x 40 voxels; the body at x 79..121, y 38..72.
  const auto v = CtWith({160, 100, 40}, {{{100, 55, 20}, {21, 17, 30}}});
  const Plan plan = CtPlan();
  const Outcome touching = Segment(v, plan);
  JobOptions options;
  options.tile_box = true;
  auto job = SegmentationJob::Create(v, plan, options);
  ASSERT_TRUE(job.ok()) << job.status();
  const CropReport& report = (*job)->crop_report();
  EXPECT_LT((*job)->num_windows(), touching.windows);
  EXPECT_EQ(report.reason, "outside the body");
  EXPECT_EQ(report.windows_skipped, report.windows_uncropped - (*job)->num_windows());
  EXPECT_LE((*job)->num_items(), SegmentationJob::CountItems(v.geometry, plan, options));  // admission's bound
  auto labels = SegmentVolume(v, plan, PointwiseTissueNet(), 4, options);
  ASSERT_TRUE(labels.ok()) << labels.status();
  int64_t body = 0, differ_in_body = 0, far = 0;
  for (int64_t i = 0; i < v.geometry.NumVoxels(); ++i) {
    const int64_t x = i % 160, y = i / 160 % 100;
    if (x >= 79 && x <= 121 && y >= 38 && y <= 72) {
      differ_in_body += labels->labels[i] != touching.labels.labels[i];
      body += labels->labels[i];
    } else if (x < 50 || y > 90) {
      far += labels->labels[i];
    }
  }
  EXPECT_GT(body, 0);
  EXPECT_EQ(differ_in_body, 0);
  EXPECT_EQ(far, 0);
}

// With resampling (anisotropic, nearest along z), a transpose and a network
// whose answer depends on the whole window, both ways back: inside the
// labelled box (the body's and around it) the labels are the uncropped run's
// exactly (the same windows, the same sums, the same taps); outside it,
// background.
TEST(BodyCrop, ResampledTransposedWindowDependentLabelsInsideTheBoxAreExact) {
  Plan plan = CtPlan();
  plan.num_classes = 5;
  plan.target_spacing = {1.5, 1.5, 1.5};
  plan.transpose = {2, 0, 1};
  imageio::Volume v = CtWith({150, 110, 14}, {{{40, 70, 7}, {25, 30, 30}}});
  v.geometry.spacing = {0.7, 0.9, 4.0};
  for (size_t i = 0; i < v.voxels.size(); ++i)  // texture inside the body
    if (v.voxels[i] > -500) v.voxels[i] += 300.0f * std::sin(0.37 * static_cast<double>(i));
  for (BackResampling way : {BackResampling::kBordersOnly, BackResampling::kFull}) {
    SCOPED_TRACE(way == BackResampling::kFull ? "full" : "borders only");
    JobOptions body, none;
    body.back_resampling = none.back_resampling = way;
    none.crop = CropMode::kNone;
    CropReport report;
    auto with = SegmentVolume(v, plan, testing::WindowDependentNet(5, plan.patch), 3, body, nullptr, &report);
    auto without = SegmentVolume(v, plan, testing::WindowDependentNet(5, plan.patch), 3, none);
    ASSERT_TRUE(with.ok()) << with.status();
    ASSERT_TRUE(without.ok()) << without.status();
    ASSERT_EQ(report.mode, CropMode::kBody);
    EXPECT_GT(report.windows_skipped, 0);
    const auto& box = report.box_xyz;
    EXPECT_LE(box[0][0], 15);  // the body: x 15..65, y 40..100
    EXPECT_GE(box[0][1], 66);
    EXPECT_LT(box[0][1], 150);
    int64_t inside = 0, differ = 0, outside_labelled = 0, foreground = 0;
    const auto& size = v.geometry.size;
    for (int64_t z = 0; z < size[2]; ++z)
      for (int64_t y = 0; y < size[1]; ++y)
        for (int64_t x = 0; x < size[0]; ++x) {
          const int64_t i = (z * size[1] + y) * size[0] + x;
          if (x >= box[0][0] && x < box[0][1] && y >= box[1][0] && y < box[1][1] && z >= box[2][0] && z < box[2][1]) {
            ++inside;
            differ += with->labels[i] != without->labels[i];
            foreground += with->labels[i] != 0;
          } else {
            outside_labelled += with->labels[i] != 0;
          }
        }
    EXPECT_EQ(differ, 0) << "of " << inside;
    EXPECT_GT(foreground, inside / 10);  // a real mix of classes, not all background
    EXPECT_EQ(outside_labelled, 0);
    EXPECT_EQ(with->stats[0].voxels + foreground, v.geometry.NumVoxels());
  }
}

TEST(BodyCrop, ABodyFillingTheFieldSavesNothingAndChangesNothing) {
  const auto v = CtWith({60, 50, 20}, {{{30, 25, 10}, {34, 30, 40}}});
  const Plan plan = CtPlan();
  const Outcome body = Segment(v, plan);
  const Outcome none = Segment(v, plan, CropMode::kNone);
  EXPECT_EQ(body.report.mode, CropMode::kBody);
  EXPECT_EQ(body.report.windows_skipped, 0);
  EXPECT_EQ(body.report.reason, "");
  EXPECT_EQ(body.windows, none.windows);
  EXPECT_EQ(Differing(body.labels, none.labels), 0);
}

// A trunk, an arm beside it that does not touch it, and a tube far away: the
// arm is segmented as without the crop; the tube (below 5 % of the trunk) is
// outside the box and becomes background.
TEST(BodyCrop, DisconnectedPartsLargeOnesKeptSmallOnesBackground) {
  const auto v = CtWith({140, 100, 24}, {
                                            {{50, 50, 12}, {25, 20, 40}},    // trunk, x 25..75
                                            {{95, 50, 12}, {7, 7, 40}},      // arm, x 88..102
                                            {{133, 95, 12}, {1.5, 1.5, 40}}  // tube at the corner
                                        });
  const Plan plan = CtPlan();
  const Outcome body = Segment(v, plan);
  const Outcome none = Segment(v, plan, CropMode::kNone);
  EXPECT_EQ(body.report.box_xyz[0], CompleteBox(140, 16, 25, 103));  // trunk to arm
  EXPECT_LT(body.report.box_xyz[0][1], 128);                         // not the tube
  int64_t tube = 0, tube_kept = 0, differ_elsewhere = 0;
  for (int64_t i = 0; i < v.geometry.NumVoxels(); ++i) {
    const int64_t x = i % 140, y = i / 140 % 100;
    if (x >= 128 && y >= 90) {
      tube += none.labels.labels[i];
      tube_kept += body.labels.labels[i];
    } else {
      differ_elsewhere += body.labels.labels[i] != none.labels.labels[i];
    }
  }
  EXPECT_GT(tube, 0);       // segmented without the crop
  EXPECT_EQ(tube_kept, 0);  // background with it
  EXPECT_EQ(differ_elsewhere, 0);
  EXPECT_GT(body.report.windows_skipped, 0);
}

TEST(BodyCrop, NoBodyMeansNoCrop) {
  const auto v = CtWith({40, 40, 10}, {});
  const Outcome run = Segment(v, CtPlan());
  EXPECT_EQ(run.report.mode, CropMode::kNone);
  EXPECT_EQ(run.report.windows_skipped, 0);
  EXPECT_EQ(run.labels.stats[0].voxels, v.geometry.NumVoxels());
}

// MR: z-scored, so the plan's default is nnU-Net's non-zero box, never the
// body (an MR has no Hounsfield units: everything is above -500).
TEST(BodyCrop, AnMrVolumeIsCroppedToItsNonzeroBox) {
  Plan plan = CtPlan();
  plan.normalization[0] = {ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, false};
  ASSERT_EQ(plan.ResolvedCrop(), CropMode::kNonzero);
  const auto v = testing::VolumeFrom({100, 90, 30}, {1, 1, 1}, [](int64_t x, int64_t y, int64_t z) {
    return x >= 60 && y >= 10 && y < 50 ? 100.0 + x + 2 * y + z : 0.0;
  });
  auto job = SegmentationJob::Create(v, plan);
  ASSERT_TRUE(job.ok()) << job.status();
  const CropReport& r = (*job)->crop_report();
  EXPECT_EQ(r.mode, CropMode::kNonzero);
  EXPECT_EQ(r.box_xyz[0], (std::array<int64_t, 2>{60, 100}));  // no margin: nnU-Net's box
  EXPECT_EQ(r.box_xyz[1], (std::array<int64_t, 2>{10, 50}));
  EXPECT_GT(r.windows_skipped, 0);
  EXPECT_EQ(r.reason, "outside the non-zero region");
  EXPECT_EQ((*job)->items_skipped_by_crop(), r.windows_skipped);  // no mirroring
  // Asking for a body crop on it is refused by the plan's validation.
  JobOptions options;
  options.crop = CropMode::kBody;
  EXPECT_EQ(SegmentationJob::Create(v, plan, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BodyCrop, SkippedItemsCountMirrorVariants) {
  const auto v = CtWith({120, 100, 40}, {{{25, 75, 20}, {15, 20, 30}}});
  JobOptions options;
  options.mirror_axes = std::vector<int>{1, 2};
  auto job = SegmentationJob::Create(v, CtPlan(), options);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_GT((*job)->crop_report().windows_skipped, 0);
  EXPECT_EQ((*job)->items_skipped_by_crop(), 4 * (*job)->crop_report().windows_skipped);
}

// A label subset's region (JobOptions::region): only the whole run's
// windows that touch it run, and its labels are the whole run's (a network
// that sees the whole window); everything else is background.
TEST(RegionCrop, TheWholeRunsWindowsTouchingTheRegionGiveItsLabelsExactly) {
  Plan plan = CtPlan();
  plan.num_classes = 5;
  const auto v = CtWith({160, 100, 40}, {{{25, 50, 20}, {15, 20, 30}}, {{130, 50, 20}, {12, 15, 30}}});
  JobOptions options;
  options.crop = CropMode::kNone;
  CropReport whole_report;
  auto whole = SegmentVolume(v, plan, testing::WindowDependentNet(5, plan.patch), 4, options, nullptr, &whole_report);
  ASSERT_TRUE(whole.ok()) << whole.status();
  options.region = preprocessing::VoxelBox{{{0, 40}, {35, 66}, {118, 143}}};  // (z, y, x)
  CropReport report;
  auto labels = SegmentVolume(v, plan, testing::WindowDependentNet(5, plan.patch), 4, options, nullptr, &report);
  ASSERT_TRUE(labels.ok()) << labels.status();
  EXPECT_EQ(report.reason, "outside the requested labels");
  EXPECT_GT(report.windows_skipped, 0);
  EXPECT_LE(report.box_xyz[0][0], 118);
  EXPECT_GE(report.box_xyz[0][1], 143);
  int64_t differ = 0, labelled = 0;
  for (int64_t i = 0; i < v.geometry.NumVoxels(); ++i) {
    const int64_t x = i % 160, y = i / 160 % 100;
    if (x >= 118 && x < 143 && y >= 35 && y < 66) {
      differ += labels->labels[i] != whole->labels[i];
      labelled += labels->labels[i] != 0;
    } else if (x < 60) {
      EXPECT_EQ(labels->labels[i], 0);  // the first body: never run
    }
  }
  EXPECT_EQ(differ, 0);
  EXPECT_GT(labelled, 0);
}

// The two-bodies volume below (160 x 100 voxels a slice) with the region
// x 118..143, y 35..66 around the second body: a pointwise network's labels
// are `whole`'s inside the region (some tissue), background left of x 60
// (the first body's windows never ran).
void ExpectTheSecondBodysRegionOnly(const LabelMap& labels, const LabelMap& whole) {
  int64_t second = 0, first = 0, differ_in_region = 0;
  for (size_t i = 0; i < labels.labels.size(); ++i) {
    const int64_t x = static_cast<int64_t>(i) % 160, y = static_cast<int64_t>(i) / 160 % 100;
    if (x >= 118 && x < 143 && y >= 35 && y < 66) {
      differ_in_region += labels.labels[i] != whole.labels[i];
      second += labels.labels[i];
    } else if (x < 60) {
      first += labels.labels[i];
    }
  }
  EXPECT_GT(second, 0);
  EXPECT_EQ(differ_in_region, 0);
  EXPECT_EQ(first, 0);
}

// With tile_box (the fast mode's subsets), windows of its own tile the
// region on the same grid: fewer than touch it; a pointwise network's labels
// inside it are the whole run's, outside it background.
TEST(RegionCrop, ATiledRegionRunsWindowsOfItsOwnAndTheRestIsBackground) {
  // Two bodies far apart: the region is around the second one only.
  const auto v = CtWith({160, 100, 40}, {{{25, 50, 20}, {15, 20, 30}}, {{130, 50, 20}, {12, 15, 30}}});
  const Plan plan = CtPlan();
  const Outcome whole = Segment(v, plan);
  JobOptions options;
  options.region = preprocessing::VoxelBox{{{0, 40}, {35, 66}, {118, 143}}};  // (z, y, x)
  auto touching = SegmentationJob::Create(v, plan, options);
  ASSERT_TRUE(touching.ok()) << touching.status();
  options.tile_box = true;
  auto job = SegmentationJob::Create(v, plan, options);
  ASSERT_TRUE(job.ok()) << job.status();
  const CropReport report = (*job)->crop_report();
  // Windows of 8 x 16 x 16 at step 0.5 tiling 40 x 31 x 25 voxels (z, y, x).
  EXPECT_EQ((*job)->num_windows(),
            static_cast<int64_t>(WindowStarts(40, 8, 0.5).size() * WindowStarts(31, 16, 0.5).size() *
                                 WindowStarts(25, 16, 0.5).size()));
  EXPECT_LT((*job)->num_windows(), (*touching)->num_windows());
  EXPECT_EQ(report.reason, "outside the requested labels");
  EXPECT_EQ(report.windows_skipped, report.windows_uncropped - (*job)->num_windows());
  EXPECT_LE(report.box_xyz[0][0], 118);
  EXPECT_GE(report.box_xyz[0][1], 143);
  EXPECT_LE(report.box_xyz[0][1], 145);
  auto labels = SegmentVolume(v, plan, PointwiseTissueNet(), 4, options);
  ASSERT_TRUE(labels.ok()) << labels.status();
  ExpectTheSecondBodysRegionOnly(*labels, whole.labels);
}

// With region_inset (the `full` mode's subsets), a window counts as
// touching the region only when more than the inset of its side overlaps
// it: fewer windows than any overlap, and still every voxel of the region
// under a window (a pointwise network's labels there are the whole run's),
// the rest background.
TEST(RegionCrop, AnInsetRunsFewerWindowsAndStillLabelsTheWholeRegion) {
  const auto v = CtWith({160, 100, 40}, {{{25, 50, 20}, {15, 20, 30}}, {{130, 50, 20}, {12, 15, 30}}});
  const Plan plan = CtPlan();
  const Outcome whole = Segment(v, plan);
  JobOptions options;
  options.region = preprocessing::VoxelBox{{{0, 40}, {35, 66}, {118, 143}}};  // (z, y, x)
  auto touching = SegmentationJob::Create(v, plan, options);
  ASSERT_TRUE(touching.ok()) << touching.status();
  for (double inset : {0.25, 0.375, 0.5}) {
    SCOPED_TRACE(inset);
    options.region_inset = inset;
    auto job = SegmentationJob::Create(v, plan, options);
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_LT((*job)->num_windows(), (*touching)->num_windows());
    const CropReport report = (*job)->crop_report();
    EXPECT_EQ(report.windows_skipped, report.windows_uncropped - (*job)->num_windows());
    EXPECT_LE(report.box_xyz[0][0], 118);
    EXPECT_GE(report.box_xyz[0][1], 143);
    EXPECT_LE(report.box_xyz[1][0], 35);
    EXPECT_GE(report.box_xyz[1][1], 66);
    auto labels = SegmentVolume(v, plan, PointwiseTissueNet(), 4, options);
    ASSERT_TRUE(labels.ok()) << labels.status();
    ExpectTheSecondBodysRegionOnly(*labels, whole.labels);
  }
}

// The region is clamped to the volume; one wholly outside it is refused.
TEST(RegionCrop, ARegionIsClampedToTheVolumeAndOneOutsideItIsRefused) {
  const auto v = CtWith({120, 100, 40}, {{{25, 75, 20}, {15, 20, 30}}});
  JobOptions options;
  options.region = preprocessing::VoxelBox{{{-5, 60}, {0, 20}, {90, 500}}};
  options.tile_box = true;
  auto job = SegmentationJob::Create(v, CtPlan(), options);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ((*job)->crop_report().box_xyz[0], (std::array<int64_t, 2>{90, 120}));
  EXPECT_EQ((*job)->crop_report().box_xyz[2], (std::array<int64_t, 2>{0, 40}));
  options.region = preprocessing::VoxelBox{{{0, 40}, {0, 20}, {200, 300}}};
  EXPECT_EQ(SegmentationJob::Create(v, CtPlan(), options).status().code(), absl::StatusCode::kInvalidArgument);
}

// An MR: the region replaces the non-zero crop.
TEST(RegionCrop, AnMrsRegionReplacesItsNonzeroCrop) {
  Plan plan = CtPlan();
  plan.normalization[0] = {ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, false};
  const auto v = testing::VolumeFrom({100, 90, 30}, {1, 1, 1}, [](int64_t x, int64_t y, int64_t z) {
    return x >= 20 && y >= 10 && y < 80 ? 100.0 + x + 2 * y + z : 0.0;
  });
  JobOptions options;
  options.region = preprocessing::VoxelBox{{{0, 30}, {50, 80}, {70, 100}}};
  options.tile_box = true;
  auto job = SegmentationJob::Create(v, plan, options);
  ASSERT_TRUE(job.ok()) << job.status();
  const CropReport& r = (*job)->crop_report();
  EXPECT_EQ(r.box_xyz[0], (std::array<int64_t, 2>{70, 100}));
  EXPECT_EQ(r.box_xyz[1][0], 50);  // the region, give or take a voxel of the taps
  EXPECT_LE(r.box_xyz[1][1], 81);
  EXPECT_GE(r.box_xyz[1][1], 80);
  EXPECT_EQ(r.reason, "outside the requested labels");
}

}  // namespace
}  // namespace upp::inference
