#include "imageio/geometry.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace upp::imageio {

std::array<double, 3> Geometry::IndexToPhysical(const std::array<double, 3>& index) const {
  std::array<double, 3> p = origin;
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) p[r] += Direction(r, c) * spacing[c] * index[c];
  }
  return p;
}

absl::Status Geometry::Validate() const {
  for (int a = 0; a < 3; ++a) {
    if (size[a] < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("image size must be >= 1 along every axis, got ", size[0], "x", size[1], "x", size[2]));
    }
    if (!std::isfinite(spacing[a]) || spacing[a] <= 0) {
      return absl::InvalidArgumentError(absl::StrFormat("voxel spacing must be finite and > 0, got %g x %g x %g",
                                                        spacing[0], spacing[1], spacing[2]));
    }
    if (!std::isfinite(origin[a])) return absl::InvalidArgumentError("image origin is not finite");
  }
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      double dot = 0;
      for (int r = 0; r < 3; ++r) dot += Direction(r, i) * Direction(r, j);
      if (!std::isfinite(dot) || std::abs(dot - (i == j ? 1.0 : 0.0)) > 1e-4) {
        return absl::InvalidArgumentError(
            "image direction cosines are not orthonormal (sheared or degenerate orientation)");
      }
    }
  }
  return absl::OkStatus();
}

std::string Geometry::DebugString() const {
  return absl::StrFormat("size %dx%dx%d spacing %g,%g,%g origin %g,%g,%g direction [%g %g %g; %g %g %g; %g %g %g]",
                         size[0], size[1], size[2], spacing[0], spacing[1], spacing[2], origin[0], origin[1], origin[2],
                         direction[0], direction[1], direction[2], direction[3], direction[4], direction[5],
                         direction[6], direction[7], direction[8]);
}

}  // namespace upp::imageio
