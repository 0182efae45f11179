// Stitching on the CPU: one window's network output added into a job's
// accumulators in one pass,
//
//   acc[c, d, h, w] += softmax_c(logits[c, d', h', w']) * weight[d, h, w]
//
// where (d', h', w') is (d, h, w) mirrored along the flipped axes (the
// network saw a mirrored window; its answer is mirrored back).
//
// Why not ATen's softmax(0), flip, mul_ and add_ (still used for jobs on a
// GPU, job.cc): they made four passes over a window's K x 1M logits with two
// window-sized temporaries, and converted float16 accumulators one element
// at a time: 26 ms per synapse window with float32 accumulators, 43 ms with
// float16, about 7 % of a whole CT's time (BENCHMARKS.md). Here each row of
// the window is copied into a small buffer (un-mirrored on the way), its
// exponentials come from glibc's vector maths library (libmvec) through the
// compiler's vectoriser, and the weighted probabilities go straight into the
// accumulators. The loops are compiled for AVX-512, AVX2 (+F16C) and the
// x86-64 baseline; the widest this CPU runs is chosen on first use.
//
// Thread-compatible: calls that share accumulators must be serialised by the
// caller (SegmentationJob holds its lock); calls on different accumulators
// may run concurrently. Torch-free.
#ifndef UPP_INFERENCE_STITCH_H_
#define UPP_INFERENCE_STITCH_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace upp::inference {

// A window of a (K, D, H, W) accumulator tensor: W is contiguous.
struct AccumulatorWindow {
  void* data = nullptr;                                  // class 0's first voxel of the window
  bool half = false;                                     // IEEE float16 accumulators, else float32
  int64_t class_stride = 0, d_stride = 0, h_stride = 0;  // in elements
};

// logits: (classes, patch[0], patch[1], patch[2]) float32, contiguous.
// weight: (patch[0], patch[1], patch[2]) float32, contiguous (the window's
// Gaussian importance, already divided among the mirror variants).
void AddSoftmaxWindow(const float* logits, int64_t classes, const std::array<int64_t, 3>& patch,
                      const std::array<bool, 3>& flip, const float* weight, const AccumulatorWindow& acc);

namespace internal {
// The compiled variants this CPU can run ("avx512", "avx2", "baseline"),
// widest first, and one of them called by name (tests compare them).
std::vector<std::string> StitchVariants();
void AddSoftmaxWindowWith(const std::string& variant, const float* logits, int64_t classes,
                          const std::array<int64_t, 3>& patch, const std::array<bool, 3>& flip, const float* weight,
                          const AccumulatorWindow& acc);
}  // namespace internal

}  // namespace upp::inference

#endif  // UPP_INFERENCE_STITCH_H_
