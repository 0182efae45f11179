// Matrix products and softmax through oneDNN (the library LibTorch itself
// uses for convolutions), for the CPU hot paths of the network.
//
// Why not torch::mm: ATen sends float32 matrix products to the system BLAS.
// The products in UNETR++'s attention and pointwise layers are skinny (inner
// dimensions of 8-64 against 4k-1M rows), where OpenBLAS spends its time
// packing, and its thread pool fights LibTorch's OpenMP pool for the cores
// (see cpu_threads.h). oneDNN's JIT matmul handles these shapes, any strides,
// bfloat16 with AMX, and runs on the same OpenMP pool. ATen 1.13's own softmax
// uses scalar exp on this build; oneDNN's is vectorised.
//
// Available() is false when the build has no oneDNN (UPP_HAVE_ONEDNN unset,
// e.g. against a pip LibTorch on a GPU host); callers then use ATen.
// All functions are thread-safe; inside an OpenMP parallel region they run
// single-threaded.
#ifndef UPP_MODEL_ONEDNN_H_
#define UPP_MODEL_ONEDNN_H_

#include <torch/torch.h>

namespace upp::model::onednn {

bool Available();

// out = a @ b (+ bias, a (N) vector broadcast over rows, or (M, 1) over
// columns). 2-D CPU tensors of one dtype (float32 or bfloat16), any strides
// with unit stride in one dimension; out must be preallocated (M, N).
void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
               const torch::Tensor& bias = {});
torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

// Softmax over the last dimension of a contiguous float32 CPU tensor, in place.
void SoftmaxLastDimInPlace(const torch::Tensor& x);

}  // namespace upp::model::onednn

#endif  // UPP_MODEL_ONEDNN_H_
