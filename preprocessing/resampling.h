// Resampling and cropping, the tensor building blocks of preprocessing
// (preprocess.h) and of the way back to the input grid (inference/job.h), in
// LibTorch so that they run wherever their tensors live (CPU or CUDA).
//
// Includes <torch/torch.h>: the server never includes it. Tensors are (C, D, H, W) unless said otherwise; 3-vectors are
// (D, H, W).
#ifndef UPP_PREPROCESSING_RESAMPLING_H_
#define UPP_PREPROCESSING_RESAMPLING_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <vector>

namespace upp::preprocessing {

enum class Interp {
  kLinear,   // torch's linear with align_corners=false == skimage order 1, mode "edge"
  kNearest,  // nearest-exact (pixel centres) == scipy map_coordinates order 0
};

// The taps of pixel-centre resampling from `in_size` to `out_size` samples:
// output o reads i0[o] and i1[o] with weight w1[o] on i1 (kNearest: i1 = i0,
// w1 = 0). Source = (o + 0.5) * in / out - 0.5, clamped to the edge.
struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<float> w1;
};
Taps ResamplingTaps(int64_t in_size, int64_t out_size, Interp mode);
// The taps of outputs [out_range[0], out_range[1]) of the resampling from
// `in_size` to `out_size` samples, with source indices relative to
// in_range[0] and clamped into in_range: one region of a larger resampling,
// computed as the whole one would be (the body crop's way back: a box of the
// network grid to a box of the input grid). With the whole ranges it is
// ResamplingTaps.
Taps RegionTaps(int64_t in_size, int64_t out_size, Interp mode, std::array<int64_t, 2> out_range,
                std::array<int64_t, 2> in_range);

// Resamples `x` along `dim` to `out_size` samples with pixel-centre alignment
// (source = (o + 0.5) * in / out - 0.5, clamped to the edge).
torch::Tensor Resample1D(const torch::Tensor& x, int64_t dim, int64_t out_size, Interp mode);
// The same through given taps (taps.i0.size() output samples, indices into
// x's `dim`).
torch::Tensor Resample1D(const torch::Tensor& x, int64_t dim, Taps taps, Interp mode);

// Whether Resample1D blends whole rows of `x` along `dim` (a contiguous
// float32 CPU tensor with at least 16 elements after `dim`) rather than
// gathering with index_select; both compute the same values.
bool ResamplesRowByRow(const torch::Tensor& x, int64_t dim);

// Separable resampling of (C, D, H, W) to `out` with one interpolation per
// axis. With all axes linear it equals trilinear interpolation
// (align_corners=false).
torch::Tensor ResampleSeparable(const torch::Tensor& x, const std::array<int64_t, 3>& out,
                                const std::array<Interp, 3>& modes);

// nnU-Net's choice of interpolation per axis: linear everywhere, except that
// when the spacing (of the source, else of the target) is anisotropic beyond
// `threshold` (max / min), its single coarsest axis is resampled by nearest
// neighbour (nnU-Net's "separate z"). Two equally coarse axes: linear.
std::array<Interp, 3> ResamplingModes(const std::array<double, 3>& from_spacing,
                                      const std::array<double, 3>& to_spacing, double threshold);

// The new grid size: round(size * from_spacing / to_spacing), at least 1,
// rounding halves to even as numpy does; INT64_MAX where it would not fit.
std::array<int64_t, 3> ResampledSize(const std::array<int64_t, 3>& size, const std::array<double, 3>& from_spacing,
                                     const std::array<double, 3>& to_spacing);

// Bounding box [begin, end) per axis (D, H, W) of voxels where any channel is
// non-zero; the whole volume when none is.
std::array<std::array<int64_t, 2>, 3> NonzeroBoundingBox(const torch::Tensor& x);

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_RESAMPLING_H_
