// The tensor building blocks of the inference pipeline (pipeline.h), in
// LibTorch so that they run wherever their tensors live (CPU or CUDA).
//
// Internal to preprocessing/ (includes <torch/torch.h>; the server never
// includes it). Tensors are (C, D, H, W) unless said otherwise; 3-vectors are
// (D, H, W).
#ifndef UPP_PREPROCESSING_TENSOR_OPS_H_
#define UPP_PREPROCESSING_TENSOR_OPS_H_

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

// Resamples `x` along `dim` to `out_size` samples with pixel-centre alignment
// (source = (o + 0.5) * in / out - 0.5, clamped to the edge).
torch::Tensor Resample1D(const torch::Tensor& x, int64_t dim, int64_t out_size, Interp mode);

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
std::array<int64_t, 3> ResampledSize(const std::array<int64_t, 3>& size,
                                     const std::array<double, 3>& from_spacing,
                                     const std::array<double, 3>& to_spacing);

// nnU-Net's sliding-window start positions along one axis of `size` (already
// padded to >= patch): ceil((size - patch) / (patch * step)) + 1 evenly
// spaced windows, the first at 0 and the last flush with the end.
std::vector<int64_t> WindowStarts(int64_t size, int64_t patch, double step);
// WindowStarts(size, patch, step).size() without building the list
// (INT64_MAX when it would not fit): for limits checked before allocating.
int64_t CountWindowStarts(int64_t size, int64_t patch, double step);

// The Gaussian importance map over a patch (D, H, W): centred at patch / 2
// (integer division), sigma = patch * sigma_scale, normalised to max 1. It is
// the product of the three GaussianFactors(); each factor is kept >= 1e-12
// so that no weight is zero.
torch::Tensor GaussianImportance(const std::array<int64_t, 3>& patch, double sigma_scale);
std::array<torch::Tensor, 3> GaussianFactors(const std::array<int64_t, 3>& patch, double sigma_scale);

// argmax over dim 0 of (K, ...) as `dtype` (the first maximum wins, as
// torch::argmax). A running maximum over the K contiguous planes: LibTorch
// 1.13's argmax over a strided outer dimension is several times slower.
torch::Tensor ArgmaxChannels(const torch::Tensor& p, torch::ScalarType dtype);

// Bounding box [begin, end) per axis (D, H, W) of voxels where any channel is
// non-zero; the whole volume when none is.
std::array<std::array<int64_t, 2>, 3> NonzeroBoundingBox(const torch::Tensor& x);

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_TENSOR_OPS_H_
