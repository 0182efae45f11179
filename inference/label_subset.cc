#include "inference/label_subset.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace upp::inference {
namespace {

// values -> a lookup table over uint16 label values.
std::vector<bool> Wanted(const std::vector<int>& values) {
  std::vector<bool> wanted(std::numeric_limits<uint16_t>::max() + 1, false);
  for (int v : values)
    if (v >= 0 && v <= std::numeric_limits<uint16_t>::max()) wanted[v] = true;
  return wanted;
}

}  // namespace

std::optional<preprocessing::VoxelBox> LabelBox(const LabelMap& map, const std::vector<int>& values, double margin_mm) {
  const auto& g = map.geometry;
  const std::array<int64_t, 3> size_zyx{g.size[2], g.size[1], g.size[0]};
  const std::vector<bool> wanted = Wanted(values);
  preprocessing::VoxelBox box;
  for (auto& b : box) b = {std::numeric_limits<int64_t>::max(), -1};
  int64_t i = 0;
  for (int64_t z = 0; z < size_zyx[0]; ++z)
    for (int64_t y = 0; y < size_zyx[1]; ++y)
      for (int64_t x = 0; x < size_zyx[2]; ++x, ++i) {
        if (!wanted[map.labels[i]]) continue;
        const std::array<int64_t, 3> p{z, y, x};
        for (int a = 0; a < 3; ++a) box[a] = {std::min(box[a][0], p[a]), std::max(box[a][1], p[a] + 1)};
      }
  if (box[0][1] < 0) return std::nullopt;
  for (int a = 0; a < 3; ++a) {
    const double spacing = g.spacing[2 - a];
    const int64_t grow = spacing > 0 ? static_cast<int64_t>(std::ceil(margin_mm / spacing)) : 0;
    box[a] = {std::max<int64_t>(0, box[a][0] - grow), std::min(size_zyx[a], box[a][1] + grow)};
  }
  return box;
}

JobOptions LocatingOptions() {
  JobOptions options;
  options.step = kLocateStep;
  options.mirror_axes = std::vector<int>{};
  return options;
}

bool AimAtLabels(const LabelMap& located, const std::vector<int>& values, double margin_mm, bool tile,
                 JobOptions* options) {
  const auto box = LabelBox(located, values, margin_mm);
  if (!box) return false;
  options->region = *box;
  options->tile_box = tile;
  options->region_inset = tile ? 0.0 : kSubsetWindowInset;
  return true;
}

void KeepLabels(const std::vector<int>& values, LabelMap* map) {
  const std::vector<bool> wanted = Wanted(values);
  int64_t cleared = 0;
  for (uint16_t& l : map->labels)
    if (l != 0 && !wanted[l]) {
      l = 0;
      ++cleared;
    }
  std::vector<LabelStats> kept;
  for (const LabelStats& s : map->stats) {
    if (s.value != 0 && !wanted[s.value]) continue;
    kept.push_back(s);
  }
  const double ml_per_voxel = map->geometry.spacing[0] * map->geometry.spacing[1] * map->geometry.spacing[2] / 1000.0;
  for (LabelStats& s : kept)
    if (s.value == 0) {
      s.voxels += cleared;
      s.volume_ml = static_cast<double>(s.voxels) * ml_per_voxel;
    }
  map->stats = std::move(kept);
}

}  // namespace upp::inference
