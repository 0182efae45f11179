#include "preprocessing/body_mask.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "imageio/checked_math.h"

namespace upp::preprocessing {
namespace {

// Voxels [x0, x1) of row (z, y) above the threshold.
struct Run {
  int32_t x0, x1, y, z;
};

// Union-find over run indices; a root is its set's smallest index.
class UnionFind {
 public:
  void Add() { parent_.push_back(static_cast<int32_t>(parent_.size())); }
  int32_t Find(int32_t i) {
    while (parent_[i] != i) {
      parent_[i] = parent_[parent_[i]];  // path halving
      i = parent_[i];
    }
    return i;
  }
  void Join(int32_t a, int32_t b) {
    a = Find(a);
    b = Find(b);
    if (a != b) parent_[std::max(a, b)] = std::min(a, b);
  }

 private:
  std::vector<int32_t> parent_;
};

// Joins the runs [a, a_end) of one row with those of [b, b_end) of a face
// neighbour's row that share an x. Runs of a row are sorted by x.
void JoinOverlapping(const std::vector<Run>& runs, int64_t a, int64_t a_end, int64_t b, int64_t b_end,
                     UnionFind& sets) {
  while (a < a_end && b < b_end) {
    if (runs[a].x1 <= runs[b].x0) {
      ++a;
    } else if (runs[b].x1 <= runs[a].x0) {
      ++b;
    } else {
      sets.Join(static_cast<int32_t>(a), static_cast<int32_t>(b));
      if (runs[a].x1 < runs[b].x1) {
        ++a;
      } else {
        ++b;
      }
    }
  }
}

struct Component {
  int64_t voxels = 0;
  VoxelBox box{{{std::numeric_limits<int64_t>::max(), 0},
                {std::numeric_limits<int64_t>::max(), 0},
                {std::numeric_limits<int64_t>::max(), 0}}};
};

int64_t MaxRuns(int64_t voxels, const BodyOptions& options) {
  const int64_t per_run = std::max<int64_t>(1, options.voxels_per_run);
  return std::min<int64_t>(std::numeric_limits<int32_t>::max(), std::max<int64_t>(4096, voxels / per_run));
}

// Per component (indexed by the order of its root): voxels and box.
std::vector<Component> Components(const std::vector<Run>& runs, UnionFind& sets) {
  std::vector<int32_t> index_of_root(runs.size(), -1);
  std::vector<Component> components;
  for (size_t i = 0; i < runs.size(); ++i) {
    const int32_t root = sets.Find(static_cast<int32_t>(i));
    if (index_of_root[root] < 0) {
      index_of_root[root] = static_cast<int32_t>(components.size());
      components.emplace_back();
    }
    Component& c = components[index_of_root[root]];
    const Run& r = runs[i];
    c.voxels += r.x1 - r.x0;
    const std::array<std::array<int64_t, 2>, 3> extent{{{r.z, r.z + 1}, {r.y, r.y + 1}, {r.x0, r.x1}}};
    for (int a = 0; a < 3; ++a) {
      c.box[a][0] = std::min(c.box[a][0], extent[a][0]);
      c.box[a][1] = std::max(c.box[a][1], extent[a][1]);
    }
  }
  return components;
}

}  // namespace

Body FindBody(const float* hu, const std::array<int64_t, 3>& size_zyx, const BodyOptions& options) {
  Body body;
  const auto [nz, ny, nx] = size_zyx;
  const int64_t kMaxAxis = std::numeric_limits<int32_t>::max();
  if (nz < 1 || ny < 1 || nx < 1 || nz > kMaxAxis || ny > kMaxAxis || nx > kMaxAxis) return body;
  const auto voxels = imageio::CheckedProduct({nz, ny, nx});
  if (!voxels) return body;
  const int64_t max_runs = MaxRuns(*voxels, options);
  const float threshold = options.threshold_hu;

  std::vector<Run> runs;
  UnionFind sets;
  // First run of each row of the previous and the current slice (ny + 1
  // entries: row y's runs are [first[y], first[y + 1])).
  std::vector<int64_t> previous(ny + 1, 0), current(ny + 1, 0);
  for (int64_t z = 0; z < nz; ++z) {
    for (int64_t y = 0; y < ny; ++y) {
      current[y] = static_cast<int64_t>(runs.size());
      const float* row = hu + (z * ny + y) * nx;
      for (int64_t x = 0; x < nx;) {
        if (!(row[x] > threshold)) {
          ++x;
          continue;
        }
        const int64_t x0 = x;
        while (x < nx && row[x] > threshold) ++x;
        if (static_cast<int64_t>(runs.size()) >= max_runs) return Body{};  // noise, not a body
        runs.push_back(
            {static_cast<int32_t>(x0), static_cast<int32_t>(x), static_cast<int32_t>(y), static_cast<int32_t>(z)});
        sets.Add();
      }
      current[y + 1] = static_cast<int64_t>(runs.size());
      if (y > 0) JoinOverlapping(runs, current[y], current[y + 1], current[y - 1], current[y], sets);
      if (z > 0) JoinOverlapping(runs, current[y], current[y + 1], previous[y], previous[y + 1], sets);
    }
    std::swap(previous, current);
  }
  if (runs.empty()) return body;

  const std::vector<Component> components = Components(runs, sets);
  for (const Component& c : components) body.largest_voxels = std::max(body.largest_voxels, c.voxels);
  body.found = true;
  body.components = static_cast<int64_t>(components.size());
  body.box = {{{nz, 0}, {ny, 0}, {nx, 0}}};
  for (const Component& c : components) {
    if (static_cast<double>(c.voxels) < options.keep_fraction * static_cast<double>(body.largest_voxels)) continue;
    ++body.kept;
    body.kept_voxels += c.voxels;
    for (int a = 0; a < 3; ++a) {
      body.box[a][0] = std::min(body.box[a][0], c.box[a][0]);
      body.box[a][1] = std::max(body.box[a][1], c.box[a][1]);
    }
  }
  return body;
}

int64_t BodyLabellingBytesBound(int64_t voxels, const BodyOptions& options) {
  // A run, its parent, its root's index and, at worst, a component each;
  // twice that, as vectors grow by doubling.
  constexpr int64_t kBytesPerRun = 2 * (sizeof(Run) + 2 * sizeof(int32_t) + sizeof(Component));
  return imageio::OrMax(imageio::CheckedMul(MaxRuns(std::max<int64_t>(0, voxels), options), kBytesPerRun));
}

}  // namespace upp::preprocessing
