// Preprocessing: what turns an input volume into the network's grid, as
// nnU-Net (v1) does it for UNETR++: crop (the plan's crop: MR to the bounding
// box of non-zero voxels; for CT the body's box is found, body_mask.h, and
// the job runs only the windows that touch it), transpose to the plan's axis order, resample to the
// target spacing (linear; nearest along the coarse axis beyond the anisotropy threshold), normalise per channel (CT
// clip + scale, z-score, none), pad with zeros to at least one patch. The inference job (inference/job.h) keeps what is
// needed to go back to the input grid.
//
// Includes <torch/torch.h>: the server never includes it (it reaches this
// through inference/job.h). Thread-safe (no shared state).
#ifndef UPP_PREPROCESSING_PREPROCESS_H_
#define UPP_PREPROCESSING_PREPROCESS_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "imageio/geometry.h"
#include "imageio/volume.h"
#include "preprocessing/body_mask.h"
#include "preprocessing/plan.h"
#include "preprocessing/resampling.h"

namespace upp::preprocessing {

struct Preprocessed {
  torch::Tensor data;                          // (C, D, H, W) normalised, padded, on the device
  std::array<std::array<int64_t, 2>, 3> crop;  // (z, y, x) tensor axes of the input, [begin, end)
  // The crop applied: the plan's, except kNone when a body crop found no
  // body (nothing above the threshold, or too fragmented to be one).
  CropMode cropped_to = CropMode::kNone;
  // kBody: the body's box in the input's (z, y, x) voxels. The input is not
  // cropped: the job runs only the windows of the whole grid that touch the
  // body (see job.cc for why that, and not a crop of the input).
  std::optional<VoxelBox> body;
  std::array<int64_t, 3> cropped_t;   // cropped size, network axis order
  std::array<int64_t, 3> grid;        // resampled size before padding, network axis order
  std::array<int64_t, 3> pad_before;  // padding to reach the patch
  std::array<Interp, 3> modes;        // resampling per network axis
  double crop_seconds = 0, resample_seconds = 0, normalize_seconds = 0;
};

// `volume` must match `plan` (channels) and be valid (see the job's Create,
// which checks both). The volume's voxels are released once resampled.
// Refuses a resampled grid whose size cannot be formed. LibTorch exceptions
// propagate (the caller is the edge that catches them).
absl::StatusOr<Preprocessed> Preprocess(imageio::Volume volume, const Plan& plan, torch::Device device);

// The box `mode` crops `volume`'s input to, (z, y, x) voxel indices: the
// non-zero box for kNonzero, else the whole volume (kBody chooses windows
// instead, Preprocessed::body).
VoxelBox CropBox(const imageio::Volume& volume, CropMode mode);

// Spacing and size of the volume's tensor axes (z, y, x) after `transpose`.
std::array<double, 3> TensorSpacing(const imageio::Geometry& g, const std::array<int, 3>& transpose);
std::array<int64_t, 3> TensorSize(const imageio::Geometry& g, const std::array<int, 3>& transpose);
// The network grid of an uncropped input (an upper bound of the cropped
// one): resampled, at least one patch along each axis; for limits computed
// before anything is allocated (saturates instead of wrapping).
std::array<int64_t, 3> PaddedGridBound(const imageio::Geometry& geometry, const Plan& plan);

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_PREPROCESS_H_
