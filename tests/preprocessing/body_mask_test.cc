// The body of a CT: the run-based labelling against a voxel flood fill, the
// parts it keeps and drops, and its memory bound.
#include "preprocessing/body_mask.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <queue>
#include <random>
#include <vector>

namespace upp::preprocessing {
namespace {

using Size = std::array<int64_t, 3>;  // (z, y, x)

struct Ct {
  Size size;
  std::vector<float> hu;
  float& at(int64_t z, int64_t y, int64_t x) { return hu[(z * size[1] + y) * size[2] + x]; }
};

// Air with noise (sd 30 HU: far below the threshold, as in a scanner).
Ct Air(Size size, uint32_t seed = 1) {
  Ct ct{size, std::vector<float>(size[0] * size[1] * size[2])};
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 30.0f);
  for (float& v : ct.hu) v = -1000.0f + noise(rng);
  return ct;
}

// Soft tissue in the ellipsoid with centre `c` and semi-axes `r`, (z, y, x).
void PaintEllipsoid(Ct& ct, std::array<double, 3> c, std::array<double, 3> r, float hu = 40.0f) {
  for (int64_t z = 0; z < ct.size[0]; ++z)
    for (int64_t y = 0; y < ct.size[1]; ++y)
      for (int64_t x = 0; x < ct.size[2]; ++x) {
        const double u = (z - c[0]) / r[0], v = (y - c[1]) / r[1], w = (x - c[2]) / r[2];
        if (u * u + v * v + w * w <= 1) ct.at(z, y, x) = hu;
      }
}

// The box of voxels above the threshold, by brute force.
VoxelBox BoxAbove(const Ct& ct, float threshold) {
  VoxelBox box{{{ct.size[0], 0}, {ct.size[1], 0}, {ct.size[2], 0}}};
  for (int64_t z = 0; z < ct.size[0]; ++z)
    for (int64_t y = 0; y < ct.size[1]; ++y)
      for (int64_t x = 0; x < ct.size[2]; ++x) {
        if (!(ct.hu[(z * ct.size[1] + y) * ct.size[2] + x] > threshold)) continue;
        const std::array<int64_t, 3> p{z, y, x};
        for (int a = 0; a < 3; ++a) box[a] = {std::min(box[a][0], p[a]), std::max(box[a][1], p[a] + 1)};
      }
  return box;
}

// 6-connected components by a voxel flood fill: voxels and box of each.
struct FloodComponent {
  int64_t voxels = 0;
  VoxelBox box;
};
std::vector<FloodComponent> FloodFill(const Ct& ct, float threshold) {
  const Size n = ct.size;
  std::vector<int> seen(ct.hu.size(), 0);
  std::vector<FloodComponent> out;
  for (size_t start = 0; start < ct.hu.size(); ++start) {
    if (seen[start] || !(ct.hu[start] > threshold)) continue;
    FloodComponent c;
    c.box = {{{n[0], 0}, {n[1], 0}, {n[2], 0}}};
    std::queue<size_t> q;
    q.push(start);
    seen[start] = 1;
    while (!q.empty()) {
      const size_t i = q.front();
      q.pop();
      const std::array<int64_t, 3> p{static_cast<int64_t>(i) / (n[1] * n[2]), static_cast<int64_t>(i) / n[2] % n[1],
                                     static_cast<int64_t>(i) % n[2]};
      ++c.voxels;
      for (int a = 0; a < 3; ++a) c.box[a] = {std::min(c.box[a][0], p[a]), std::max(c.box[a][1], p[a] + 1)};
      for (int a = 0; a < 3; ++a)
        for (int d : {-1, 1}) {
          std::array<int64_t, 3> q3 = p;
          q3[a] += d;
          if (q3[a] < 0 || q3[a] >= n[a]) continue;
          const size_t j = static_cast<size_t>((q3[0] * n[1] + q3[1]) * n[2] + q3[2]);
          if (!seen[j] && ct.hu[j] > threshold) {
            seen[j] = 1;
            q.push(j);
          }
        }
    }
    out.push_back(c);
  }
  return out;
}

TEST(FindBody, AnOffCentreBodyIsFoundWhereItIs) {
  Ct ct = Air({40, 96, 120});
  PaintEllipsoid(ct, {20, 30, 85}, {30, 20, 25});  // touches z's ends, in the upper right
  const Body body = FindBody(ct.hu.data(), ct.size);
  ASSERT_TRUE(body.found);
  EXPECT_EQ(body.box, BoxAbove(ct, -500.0f));
  EXPECT_EQ(body.box[1][0], 10);  // y: 30 - 20
  EXPECT_EQ(body.box[1][1], 51);
  EXPECT_EQ(body.box[2][0], 60);  // x: 85 - 25
  EXPECT_EQ(body.box[2][1], 111);
  EXPECT_EQ(body.components, 1);
  EXPECT_EQ(body.kept, 1);
}

// The labelling over runs against a voxel flood fill, on random blobs whose
// parts touch in every way (along x, y, z, and across rows of many runs).
TEST(FindBody, RunLabellingAgreesWithAVoxelFloodFill) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 25; ++trial) {
    const Size size{static_cast<int64_t>(4 + rng() % 12), static_cast<int64_t>(4 + rng() % 20),
                    static_cast<int64_t>(4 + rng() % 30)};
    Ct ct = Air(size, trial);
    std::uniform_real_distribution<double> u(0, 1);
    const int blobs = 1 + static_cast<int>(rng() % 8);
    for (int b = 0; b < blobs; ++b)
      PaintEllipsoid(ct, {u(rng) * size[0], u(rng) * size[1], u(rng) * size[2]},
                     {0.5 + u(rng) * 4, 0.5 + u(rng) * 6, 0.5 + u(rng) * 8});
    for (float& v : ct.hu)  // sprinkled voxels: single-voxel parts and bridges
      if (u(rng) < 0.02) v = 100.0f;

    const auto flood = FloodFill(ct, -500.0f);
    int64_t largest = 0;
    for (const auto& c : flood) largest = std::max(largest, c.voxels);
    for (double fraction : {0.0, 0.05, 0.5, 1.0}) {
      BodyOptions options;
      options.keep_fraction = fraction;
      const Body body = FindBody(ct.hu.data(), size, options);
      SCOPED_TRACE(testing::Message() << "trial " << trial << " fraction " << fraction);
      ASSERT_EQ(body.found, !flood.empty());
      if (flood.empty()) continue;
      VoxelBox box{{{size[0], 0}, {size[1], 0}, {size[2], 0}}};
      int64_t kept = 0, kept_voxels = 0;
      for (const auto& c : flood) {
        if (static_cast<double>(c.voxels) < fraction * static_cast<double>(largest)) continue;
        ++kept;
        kept_voxels += c.voxels;
        for (int a = 0; a < 3; ++a) box[a] = {std::min(box[a][0], c.box[a][0]), std::max(box[a][1], c.box[a][1])};
      }
      EXPECT_EQ(body.components, static_cast<int64_t>(flood.size()));
      EXPECT_EQ(body.largest_voxels, largest);
      EXPECT_EQ(body.kept, kept);
      EXPECT_EQ(body.kept_voxels, kept_voxels);
      EXPECT_EQ(body.box, box);
    }
  }
}

// A trunk, an arm beside it (not touching) and a small tube: the arm is kept
// (a part of the patient the model may label), the tube is dropped.
TEST(FindBody, KeepsLargePartsAndDropsSmallOnes) {
  Ct ct = Air({30, 80, 140});
  PaintEllipsoid(ct, {15, 40, 60}, {40, 25, 35});            // trunk, x 25..95
  PaintEllipsoid(ct, {15, 40, 115}, {40, 8, 8});             // arm, x 107..123: 7 % of the trunk's voxels
  for (int64_t z = 0; z < 30; ++z) ct.at(z, 75, 5) = 60.0f;  // a tube along z, 30 voxels
  const Body body = FindBody(ct.hu.data(), ct.size);
  ASSERT_TRUE(body.found);
  EXPECT_EQ(body.components, 3);
  EXPECT_EQ(body.kept, 2);
  EXPECT_EQ(body.box[2][0], 25);   // the tube at x = 5 is outside
  EXPECT_EQ(body.box[2][1], 124);  // the arm is inside
  EXPECT_EQ(body.box[1][1], 66);   // y: the tube at 75 is outside

  BodyOptions largest_only;
  largest_only.keep_fraction = 1.0;
  const Body trunk = FindBody(ct.hu.data(), ct.size, largest_only);
  EXPECT_EQ(trunk.kept, 1);
  EXPECT_EQ(trunk.box[2][1], 96);  // without the arm
}

TEST(FindBody, NothingToFindMeansNoCrop) {
  Ct ct = Air({16, 64, 64});
  EXPECT_FALSE(FindBody(ct.hu.data(), ct.size).found);
  // Stripes above and below the threshold: 32768 one-voxel runs, more than
  // a body has (the default limit is one per 32 voxels).
  for (size_t i = 0; i < ct.hu.size(); ++i) ct.hu[i] = i % 2 ? 0.0f : -1000.0f;
  EXPECT_FALSE(FindBody(ct.hu.data(), ct.size).found);
  BodyOptions options;
  options.voxels_per_run = 2;  // now within the limit
  EXPECT_TRUE(FindBody(ct.hu.data(), ct.size, options).found);
  EXPECT_FALSE(FindBody(ct.hu.data(), {0, 16, 16}).found);
}

TEST(BodyLabellingBytesBound, GrowsWithTheVolumeAndSaturates) {
  EXPECT_GT(BodyLabellingBytesBound(int64_t{512} * 512 * 300), BodyLabellingBytesBound(int64_t{64} * 64 * 64));
  EXPECT_LE(BodyLabellingBytesBound(int64_t{512} * 512 * 300), int64_t{5} * 512 * 512 * 300);
  EXPECT_GT(BodyLabellingBytesBound(INT64_MAX), 0);
}

}  // namespace
}  // namespace upp::preprocessing
