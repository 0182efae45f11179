// Finish()'s way back from the network grid to the input grid: the stitched
// class probabilities resampled onto the cropped input grid (linear; nearest
// along the coarse axis when anisotropic), their argmax written as labels,
// and the voxels per class counted. Apart from the job (job.h keeps the
// windows and accumulators) as nnU-Net keeps export_prediction.py apart from
// its sliding window.
//
// Two ways, the same labels (back_resample.cc says why):
//   BackResampleBorders: CPU only; labels first, every class interpolated
//                        only where the source labels disagree.
//   BackResampleFull:    every class at every output voxel, slab by slab,
//                        then the argmax (nnU-Net's way; any device).
//
// Includes <torch/torch.h>: the server never includes it (it sees job.h).
// 3-vectors are in network axis order (D, H, W).
#ifndef UPP_INFERENCE_BACK_RESAMPLE_H_
#define UPP_INFERENCE_BACK_RESAMPLE_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>

#include "inference/job.h"
#include "preprocessing/resampling.h"

namespace upp::inference {

// The grids a back-resampling goes between.
struct BackResampleGrids {
  std::array<int64_t, 3> source;               // the network grid (or the box of it the windows ran over), no padding
  std::array<int64_t, 3> output;               // the cropped input (or the box of it those windows cover)
  std::array<preprocessing::Interp, 3> modes;  // resampling per axis
  // Output -> source per axis (preprocessing::RegionTaps when the source is a
  // box of a larger grid); `whole`: they are ResamplingTaps(source, output).
  std::array<preprocessing::Taps, 3> taps;
  bool whole = true;

  // Between the whole grids.
  static BackResampleGrids Whole(const std::array<int64_t, 3>& source, const std::array<int64_t, 3>& output,
                                 const std::array<preprocessing::Interp, 3>& modes);
};

// Above this share of source cells on a label border, resampling every class
// (vectorised LibTorch) beats interpolating the border voxels one by one
// (BackResampling::kAuto):
// measured on 14 classes, a border voxel costs ~3.4x a voxel of the full way.
inline constexpr double kMaxBorderShare = 0.25;

// The share of source cells (2 x 2 x 2 neighbouring voxels; 1 x 2 x 2 when
// the first axis is resampled by nearest neighbour) whose labels differ,
// estimated from every 32nd slice: what the shortcut would have to
// interpolate in full. Noisy outputs (random weights) are mostly border;
// real segmentations a few per cent.
double BorderShare(const torch::Tensor& acc, preprocessing::Interp first_axis);

// Both ways take the accumulators `acc` (K, D, H, W, without padding;
// float32 or float16: probability x window weight summed) and the window
// weights' per-axis profiles over the same grid (`profile`; the weight of a
// voxel is their product). They write the labels into `region` (int16,
// the grids' output size: a view of the input-order label map inside the
// crop box, already zero), return the voxel count per class there (int64,
// K) and record times->resample_back and times->argmax_paste.
torch::Tensor BackResampleBorders(const torch::Tensor& acc, const std::array<torch::Tensor, 3>& profile,
                                  const BackResampleGrids& grids, const torch::Tensor& region, StageTimes* times);
torch::Tensor BackResampleFull(const torch::Tensor& acc, const std::array<torch::Tensor, 3>& profile,
                               const BackResampleGrids& grids, const torch::Tensor& region, StageTimes* times);

}  // namespace upp::inference

#endif  // UPP_INFERENCE_BACK_RESAMPLE_H_
