// A medical image volume in memory: geometry plus float32 voxels.
//
// Voxels are stored (C, z, y, x), x fastest (docs/axes.md), as float32 after
// any rescaling the file format prescribes. Multi-channel volumes (e.g. the
// four BraTS modalities of a 4-D NIfTI) share one geometry.
//
// Torch-free; preprocessing sources wrap `voxels` in a tensor without copying.
#ifndef UPP_IMAGEIO_VOLUME_H_
#define UPP_IMAGEIO_VOLUME_H_

#include <cstdint>
#include <vector>

#include "imageio/geometry.h"

namespace upp::imageio {

struct Volume {
  Geometry geometry;
  int64_t channels = 1;
  std::vector<float> voxels;  // channels * geometry.NumVoxels() values

  float At(int64_t c, int64_t x, int64_t y, int64_t z) const {
    const auto& s = geometry.size;
    return voxels[((c * s[2] + z) * s[1] + y) * s[0] + x];
  }
};

}  // namespace upp::imageio

#endif  // UPP_IMAGEIO_VOLUME_H_
