// Where a volume's voxels are in the patient: the one geometry type of the
// project (ITK's image geometry, DICOM's patient coordinate system).
//
// Axis rule (docs/axes.md): index (i, j, k) = (x, y, z); the voxel buffer is
// (C, z, y, x) with x fastest, i.e. tensor (C, D, H, W) with W = x, H = y,
// D = z. All vectors here are in index order (x, y, z) and in LPS patient
// coordinates (x to the patient's left, y to posterior, z to superior).
//
// physical = origin + direction * diag(spacing) * index
//
// Plain values; torch-free, so the server can include it.
#ifndef UPP_IMAGEIO_GEOMETRY_H_
#define UPP_IMAGEIO_GEOMETRY_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace upp::imageio {

struct Geometry {
  std::array<int64_t, 3> size{0, 0, 0};          // voxels along x, y, z
  std::array<double, 3> spacing{1.0, 1.0, 1.0};  // mm between voxel centres
  std::array<double, 3> origin{0.0, 0.0, 0.0};   // centre of voxel (0,0,0), mm, LPS
  // Row-major 3x3; column a is the unit LPS direction of index axis a.
  std::array<double, 9> direction{1, 0, 0, 0, 1, 0, 0, 0, 1};

  int64_t NumVoxels() const { return size[0] * size[1] * size[2]; }
  double Direction(int row, int col) const { return direction[row * 3 + col]; }
  // LPS position of a (possibly fractional) index.
  std::array<double, 3> IndexToPhysical(const std::array<double, 3>& index) const;

  // Sizes >= 1, spacing finite and > 0, origin finite, direction orthonormal
  // (within 1e-4). INVALID_ARGUMENT naming the problem otherwise.
  absl::Status Validate() const;
  std::string DebugString() const;
};

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_GEOMETRY_H_
