// Synthetic volumes for tests: one function fills a grid from a formula, so
// that each test says only what its voxels are.
#ifndef UPP_TESTS_TESTING_VOLUMES_H_
#define UPP_TESTS_TESTING_VOLUMES_H_

#include <array>
#include <cstdint>

#include "imageio/volume.h"

namespace upp::testing {

// A one-channel volume of `size` (x, y, z) voxels at `spacing` whose voxel
// (x, y, z) holds value(x, y, z), stored x fastest.
template <typename ValueAt>
imageio::Volume VolumeFrom(std::array<int64_t, 3> size, std::array<double, 3> spacing, ValueAt value) {
  imageio::Volume v;
  v.geometry.size = size;
  v.geometry.spacing = spacing;
  v.voxels.resize(v.geometry.NumVoxels());
  size_t i = 0;
  for (int64_t z = 0; z < size[2]; ++z)
    for (int64_t y = 0; y < size[1]; ++y)
      for (int64_t x = 0; x < size[0]; ++x) v.voxels[i++] = static_cast<float>(value(x, y, z));
  return v;
}

}  // namespace upp::testing

#endif  // UPP_TESTS_TESTING_VOLUMES_H_
