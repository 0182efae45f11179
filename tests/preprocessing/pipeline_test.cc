// Stage tests of the inference pipeline on small synthetic volumes with known
// answers, using fake "networks" whose answers are known too.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "preprocessing/pipeline.h"
#include "preprocessing/plan.h"
#include "preprocessing/tensor_ops.h"

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
  torch::Tensor ref = F::interpolate(x.unsqueeze(0), F::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{13, 6, 6})
                                                         .mode(torch::kNearestExact))[0];
  EXPECT_TRUE(torch::equal(mine, ref));
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
  EXPECT_EQ(ResampledSize({10, 100, 100}, {5.0, 0.8, 0.8}, {3.0, 0.76, 0.76}),
            (std::array<int64_t, 3>{17, 105, 105}));
  // 5 * 1 / 2 = 2.5 rounds to 2 (half to even, as np.round).
  EXPECT_EQ(ResampledSize({5, 7, 9}, {1, 1, 1}, {2, 2, 2}), (std::array<int64_t, 3>{2, 4, 4}));
}

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
  for (const auto& c : cases)
    EXPECT_EQ(WindowStarts(c.size, c.patch, c.step), c.starts) << c.size << " " << c.patch;
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
  for (int64_t a = 0; a < 3; ++a)
    EXPECT_LT((inner - inner.flip({a})).abs().max().item<float>(), 1e-7);
  // Separable: g(d, h, w) = g(d, c, c) g(c, h, c) g(c, c, w).
  torch::Tensor prod = g.select(1, 8).select(1, 6).view({8, 1, 1}) *
                       g.select(0, 4).select(1, 6).view({1, 16, 1}) *
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
BatchRunner PointwiseNet(int64_t classes, int64_t channels, std::array<int64_t, 3> patch) {
  return [=](const float* in, int64_t batch, float* out) {
    const int64_t n = patch[0] * patch[1] * patch[2];
    torch::Tensor x = torch::from_blob(const_cast<float*>(in), {batch, channels, n}).select(1, 0);
    torch::Tensor k = torch::arange(classes, torch::kFloat).view({1, classes, 1});
    torch::from_blob(out, {batch, classes, n}).copy_(-4 * (x.unsqueeze(1) - k).pow(2));
    return absl::OkStatus();
  };
}

Plan IdentityPlan(std::array<int64_t, 3> patch, int classes) {
  Plan plan;
  plan.target_spacing = {1.0, 1.0, 1.0};
  plan.patch = patch;
  plan.num_classes = classes;
  plan.normalization[0].scheme = ChannelNormalization::Scheme::kNone;
  plan.crop_to_nonzero = false;
  return plan;
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
    auto result = Segment(std::move(v), plan, PointwiseNet(4, 1, plan.patch), 3);
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
  auto plain = Segment(v, plan, PointwiseNet(4, 1, plan.patch), 2);
  JobOptions mirrored;
  mirrored.mirror_axes = std::vector<int>{0, 1, 2};
  auto job = SegmentationJob::Create(v, plan, mirrored);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ((*job)->num_variants(), 8);
  auto flipped = Segment(v, plan, PointwiseNet(4, 1, plan.patch), 5, mirrored);
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
  EXPECT_EQ((*job)->AddOutput((*job)->num_items(), out.data()).status().code(),
            absl::StatusCode::kOutOfRange);

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
    auto result = Segment(std::move(v), plan, PointwiseNet(4, 1, plan.patch), 4, options);
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

TEST(Job, CropsToNonzeroAndPastesBackAsBackground) {
  Plan plan = IdentityPlan({8, 16, 16}, 4);
  plan.crop_to_nonzero = true;
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
  auto result = Segment(std::move(v), plan, PointwiseNet(4, 1, plan.patch));
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
  v.voxels = std::vector<float>(256, -1000.0f);  // clipped to -100 -> class -2 -> 0
  for (int i = 128; i < 256; ++i) v.voxels[i] = 400.0f;  // (400 - 100) / 100 = 3
  auto result = Segment(v, plan, PointwiseNet(8, 1, plan.patch));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->labels[0], 0);
  EXPECT_EQ(result->labels[200], 3);

  plan.normalization[0] = {ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, false};
  result = Segment(v, plan, PointwiseNet(8, 1, plan.patch));
  ASSERT_TRUE(result.ok());
  // Two equal halves: z-scores -1 and +1 -> classes 0 and 1.
  EXPECT_EQ(result->labels[0], 0);
  EXPECT_EQ(result->labels[200], 1);
}

// A "network" whose answer depends on the whole window (through its mean) as
// well as on each voxel, with many classes: overlapping windows disagree, so
// the stitched probabilities are a real blend and label borders are ragged.
BatchRunner WindowDependentNet(int64_t classes, std::array<int64_t, 3> patch) {
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
imageio::Volume WavyVolume(std::array<int64_t, 3> size_xyz, std::array<double, 3> spacing) {
  imageio::Volume v;
  v.geometry.size = size_xyz;
  v.geometry.spacing = spacing;
  v.voxels.resize(v.geometry.NumVoxels());
  size_t i = 0;
  for (int64_t z = 0; z < size_xyz[2]; ++z)
    for (int64_t y = 0; y < size_xyz[1]; ++y)
      for (int64_t x = 0; x < size_xyz[0]; ++x, ++i) {
        const bool border = x < 2 || y < 3 || z < 1 || x >= size_xyz[0] - 1;
        v.voxels[i] = border ? 0.0f
                             : static_cast<float>(std::sin(0.31 * x * spacing[0]) + std::cos(0.23 * y * spacing[1]) +
                                                  0.8 * std::sin(0.17 * z * spacing[2] + 0.05 * x));
      }
  return v;
}

TEST(Job, BackResamplingShortcutEqualsFullResampling) {
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
      {{61, 47, 13}, {0.7, 0.9, 4.0}, {0, 1, 2}, 6, AccumulatorPrecision::kFloat32},   // nearest along z
      {{61, 47, 13}, {0.7, 0.9, 4.0}, {0, 1, 2}, 6, AccumulatorPrecision::kFloat16},
      {{40, 35, 30}, {1.1, 1.3, 1.7}, {2, 0, 1}, 5, AccumulatorPrecision::kFloat32},   // trilinear, transposed
      {{33, 29, 17}, {1.2, 0.8, 2.1}, {1, 2, 0}, 300, AccumulatorPrecision::kFloat32},  // labels beyond uint8
  };
  for (const auto& c : cases) {
    Plan plan = IdentityPlan({8, 16, 16}, c.classes);
    plan.target_spacing = {1.5, 1.5, 1.5};
    plan.transpose = c.transpose;
    plan.crop_to_nonzero = true;
    const imageio::Volume v = WavyVolume(c.size, c.spacing);
    JobOptions fast, full;
    fast.accumulator = full.accumulator = c.acc;
    fast.back_resampling = BackResampling::kBordersOnly;
    full.back_resampling = BackResampling::kFull;
    StageTimes times;
    auto a = Segment(v, plan, WindowDependentNet(c.classes, plan.patch), 3, fast, &times);
    auto b = Segment(v, plan, WindowDependentNet(c.classes, plan.patch), 3, full);
    JobOptions automatic;
    automatic.accumulator = c.acc;
    auto d = Segment(v, plan, WindowDependentNet(c.classes, plan.patch), 3, automatic);
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

TEST(Plan, JsonRoundTripAndFieldNamesInErrors) {
  Plan plan = DefaultCtPlan(14);
  plan.mirror_axes = {0, 2};
  plan.normalization.push_back({ChannelNormalization::Scheme::kZScore, 0, 0, 0, 1, true});
  auto back = Plan::FromJson(plan.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), plan.ToJson());
  EXPECT_EQ(back->labels.size(), 14u);
  EXPECT_EQ(back->labels[6].name, "liver");
  EXPECT_TRUE(back->normalization[1].use_nonzero_mask);

  auto expect_field = [](const std::string& json, const std::string& field) {
    auto p = Plan::FromJson(json);
    ASSERT_FALSE(p.ok()) << json;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(field), std::string::npos) << p.status();
  };
  expect_field("{\"step\": 1.5}", "plan.step");
  expect_field("{\"patch\": [0, 4, 4]}", "plan.patch");
  expect_field("{\"transpose\": [0, 0, 1]}", "plan.transpose");
  expect_field("{\"mirror_axes\": [3]}", "plan.mirror_axes");
  expect_field("{\"target_spacing\": \"x\"}", "plan.target_spacing");
  expect_field("{\"num_classes\": 3, \"labels\": [{\"value\": 3}]}", "plan.labels");
  expect_field("{\"normalization\": [{\"scheme\": \"ct\", \"clip_low\": 5, \"clip_high\": 1, "
               "\"mean\": 0, \"std\": 1}]}",
               "plan.normalization[0]");
  expect_field("{\"stepp\": 0.5}", "plan.stepp");
  expect_field("[1]", "plan.json");
  EXPECT_EQ(Plan::FromMetadata({}).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace upp::preprocessing
