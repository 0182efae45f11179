#include "preprocessing/nonfinite.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace upp::preprocessing {

absl::StatusOr<int64_t> HandleNonFinite(imageio::Volume& volume, NonFinitePolicy policy) {
  const int64_t per_channel = volume.geometry.NumVoxels();
  int64_t count = 0;
  for (int64_t c = 0; c < volume.channels; ++c) {
    float* v = volume.voxels.data() + c * per_channel;
    float lowest = std::numeric_limits<float>::infinity();
    int64_t bad = 0;
    for (int64_t i = 0; i < per_channel; ++i) {
      if (std::isfinite(v[i])) {
        lowest = std::min(lowest, v[i]);
      } else {
        ++bad;
      }
    }
    if (bad == 0) continue;
    count += bad;
    if (policy == NonFinitePolicy::kRefuse)
      return absl::InvalidArgumentError(
          absl::StrCat("the input holds ", bad, " NaN or infinite voxels (this server refuses them)"));
    // The channel's lowest value is background-like (air in CT, nothing in
    // MR), which is what NaN marks in masked research images.
    const float fill = std::isfinite(lowest) ? lowest : 0.0f;
    for (int64_t i = 0; i < per_channel; ++i)
      if (!std::isfinite(v[i])) v[i] = fill;
  }
  return count;
}

}  // namespace upp::preprocessing
