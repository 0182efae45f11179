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

#include <memory>

namespace upp::model::onednn {

bool Available();

// out = a @ b (+ bias, a (N) vector broadcast over rows, or (M, 1) over
// columns). 2-D CPU tensors of one dtype (float32 or bfloat16), any strides
// with unit stride in one dimension; out must be preallocated (M, N).
void MatmulOut(const torch::Tensor& out, const torch::Tensor& a, const torch::Tensor& b,
               const torch::Tensor& bias = {});
torch::Tensor Matmul(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {});

// 3-D convolution, output in channels-last (NDHWC) memory, float32.
// x: (B, Cin, D, H, W) float32 with any strides (channels-last avoids a
// reorder); weight (Cout, Cin, kd, kh, kw) float32 or bfloat16, whose dtype is
// the compute dtype; bias (Cout) or undefined. Channels-last is oneDNN's
// native layout for these convolutions, so a network that stays in it pays no
// layout conversions around each convolution (ATen's mkldnn_convolution
// converts NCDHW to a blocked layout and back on every call).
//
// `packed` (optional) keeps the weights in the layout the convolution's
// kernel wants, made on the first call and reused while the weight tensor
// (the same tensor, unchanged in place) and that layout stay: without it, bfloat16
// weights were reordered into oneDNN's blocked layout at every call (9 % of
// a bfloat16 window, docs/model.md).
class PackedWeights;
torch::Tensor Conv3d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     c10::IntArrayRef stride, c10::IntArrayRef padding, PackedWeights* packed = nullptr);

// Reordered copies of a layer's weights (at most a few: its own, and e.g.
// batch norm folded in), owned by the layer. Thread-safe: instances that
// share the layer run it from their own threads.
class PackedWeights {
 public:
  PackedWeights();
  ~PackedWeights();
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;
  void Clear();          // when the layer's weights are replaced (frees the copies)
  int64_t size() const;  // copies held (tests)

 private:
  friend torch::Tensor Conv3d(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, c10::IntArrayRef,
                              c10::IntArrayRef, PackedWeights*);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Instance normalisation without affine parameters (per sample and channel,
// over D, H, W; biased variance; eps), as oneDNN batch normalisation on each
// sample with statistics computed from the data. float32 5-D CPU tensor; the
// result keeps channels-last when the input has it. ATen 1.13's own
// channels-last group_norm sums x and x^2 in float and loses three digits on
// large volumes; oneDNN computes the mean first, then the centred variance.
torch::Tensor InstanceNorm(const torch::Tensor& x, double eps);

// Softmax over the last dimension of a contiguous float32 CPU tensor, in place.
void SoftmaxLastDimInPlace(const torch::Tensor& x);

}  // namespace upp::model::onednn

#endif  // UPP_MODEL_ONEDNN_H_
