// The tensor building blocks of sliding-window inference (job.h): window
// positions, the Gaussian importance of a window, the argmax of class maps.
// In LibTorch so that they run wherever their tensors live (CPU or CUDA).
//
// Includes <torch/torch.h>: the server never includes it. 3-vectors are
// (D, H, W).
#ifndef UPP_INFERENCE_WINDOWS_H_
#define UPP_INFERENCE_WINDOWS_H_

#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <vector>

namespace upp::inference {

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

}  // namespace upp::inference

#endif  // UPP_INFERENCE_WINDOWS_H_
