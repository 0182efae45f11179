#include "preprocessing/resampling.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <mutex>

#include "imageio/checked_math.h"

namespace upp::preprocessing {

Taps ResamplingTaps(int64_t in_size, int64_t out_size, Interp mode) {
  // Computed in double on the host (a few hundred entries at most).
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  Taps t{std::vector<int64_t>(out_size), std::vector<int64_t>(out_size), std::vector<float>(out_size, 0.0f)};
  for (int64_t o = 0; o < out_size; ++o) {
    if (mode == Interp::kNearest) {
      t.i0[o] = t.i1[o] = std::min(static_cast<int64_t>(std::floor((o + 0.5) * scale)), in_size - 1);
      continue;
    }
    const double src = std::max((o + 0.5) * scale - 0.5, 0.0);
    const int64_t lo = std::min(static_cast<int64_t>(src), in_size - 1);
    t.i0[o] = lo;
    t.i1[o] = lo < in_size - 1 ? lo + 1 : lo;
    t.w1[o] = static_cast<float>(src - lo);
  }
  return t;
}

Taps RegionTaps(int64_t in_size, int64_t out_size, Interp mode, std::array<int64_t, 2> out_range,
                std::array<int64_t, 2> in_range) {
  const Taps whole = ResamplingTaps(in_size, out_size, mode);
  const int64_t n = out_range[1] - out_range[0];
  Taps t{std::vector<int64_t>(n), std::vector<int64_t>(n), std::vector<float>(n, 0.0f)};
  const auto local = [&](int64_t i) { return std::clamp(i, in_range[0], in_range[1] - 1) - in_range[0]; };
  for (int64_t o = 0; o < n; ++o) {
    t.i0[o] = local(whole.i0[out_range[0] + o]);
    t.i1[o] = local(whole.i1[out_range[0] + o]);
    t.w1[o] = whole.w1[out_range[0] + o];
  }
  return t;
}

namespace {

// Rows of at least this many contiguous elements after the resampled axis
// are blended whole (ResampleRows); shorter ones go through index_select.
constexpr int64_t kMinRow = 16;

// Resampling along `dim` of a contiguous float32 CPU tensor, row by row: the
// elements after `dim` are contiguous, so each output row is one input row
// (nearest) or the blend of two (linear), with the arithmetic of the
// index_select path below. Why not that path here: LibTorch 1.13's
// index_select along an outer axis copies element by element; picking 60 of
// 80 slices of a 384 x 384 CT took 122 ms and the linear blend (two gathers
// and the arithmetic) 212 ms, most of a request's preprocessing.
// `inner`: the elements after `dim` (one row).
torch::Tensor ResampleRows(const torch::Tensor& x, int64_t dim, int64_t inner, int64_t out_size, const Taps& taps) {
  const int64_t in_size = x.size(dim);
  const int64_t outer = x.numel() / (in_size * inner);
  std::vector<int64_t> shape = x.sizes().vec();
  shape[dim] = out_size;
  torch::Tensor y = torch::empty(shape, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  at::parallel_for(0, outer * out_size, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / out_size, o = r % out_size;
      const float* a = src + (b * in_size + taps.i0[o]) * inner;
      float* out = dst + r * inner;
      if (taps.w1[o] == 0.0f) {
        std::copy(a, a + inner, out);
        continue;
      }
      const float* c = src + (b * in_size + taps.i1[o]) * inner;
      const float w = taps.w1[o];
      for (int64_t i = 0; i < inner; ++i) out[i] = a[i] + w * (c[i] - a[i]);
    }
  });
  return y;
}

int64_t RowLength(const torch::Tensor& x, int64_t dim) {
  int64_t row = 1;  // contiguous elements after `dim`
  for (int64_t a = dim + 1; a < x.dim(); ++a) row *= x.size(a);
  return row;
}

}  // namespace

bool ResamplesRowByRow(const torch::Tensor& x, int64_t dim) {
  return x.is_cpu() && x.scalar_type() == torch::kFloat && x.is_contiguous() && RowLength(x, dim) >= kMinRow;
}

torch::Tensor Resample1D(const torch::Tensor& x, int64_t dim, int64_t out_size, Interp mode) {
  const int64_t in_size = x.size(dim);
  TORCH_CHECK(in_size > 0 && out_size > 0, "resampling: empty axis");
  if (in_size == out_size) return x;
  return Resample1D(x, dim, ResamplingTaps(in_size, out_size, mode), mode);
}

torch::Tensor Resample1D(const torch::Tensor& x, int64_t dim, Taps taps, Interp mode) {  // by value: from_blob
  const int64_t out_size = static_cast<int64_t>(taps.i0.size());
  TORCH_CHECK(x.size(dim) > 0 && out_size > 0, "resampling: empty axis");
  if (ResamplesRowByRow(x, dim)) return ResampleRows(x, dim, RowLength(x, dim), out_size, taps);
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  const torch::Tensor idx0 = torch::from_blob(taps.i0.data(), {out_size}, long_opts).to(x.device());
  torch::Tensor a = x.index_select(dim, idx0);
  if (mode == Interp::kNearest) return a;
  const torch::Tensor idx1 = torch::from_blob(taps.i1.data(), {out_size}, long_opts).to(x.device());
  std::vector<int64_t> shape(x.dim(), 1);
  shape[dim] = out_size;
  const torch::Tensor w =
      torch::from_blob(taps.w1.data(), {out_size}, torch::kFloat).to(x.device(), x.scalar_type()).view(shape);
  // a + w * (b - a), in place on the gathered copy.
  return a.add_(w * (x.index_select(dim, idx1) - a));
}

torch::Tensor ResampleSeparable(const torch::Tensor& x, const std::array<int64_t, 3>& out,
                                const std::array<Interp, 3>& modes) {
  TORCH_CHECK(x.dim() == 4, "ResampleSeparable wants (C, D, H, W)");
  torch::Tensor y = Resample1D(x, 1, out[0], modes[0]);
  if (y.size(2) == out[1] && y.size(3) == out[2]) return y;
  if (modes[1] == Interp::kLinear && modes[2] == Interp::kLinear && y.is_floating_point()) {
    // In-plane: LibTorch's bilinear kernel (the same arithmetic, but
    // vectorised), with the slices as the batch.
    namespace F = torch::nn::functional;
    torch::Tensor planes = y.transpose(0, 1);  // (D, C, H, W)
    planes = F::interpolate(planes, F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{out[1], out[2]})
                                        .mode(torch::kBilinear)
                                        .align_corners(false));
    return planes.transpose(0, 1).contiguous();
  }
  y = Resample1D(y, 2, out[1], modes[1]);
  return Resample1D(y, 3, out[2], modes[2]);
}

std::array<Interp, 3> ResamplingModes(const std::array<double, 3>& from_spacing,
                                      const std::array<double, 3>& to_spacing, double threshold) {
  std::array<Interp, 3> modes{Interp::kLinear, Interp::kLinear, Interp::kLinear};
  auto coarse_axis = [&](const std::array<double, 3>& s) -> int {
    const double mx = *std::max_element(s.begin(), s.end());
    const double mn = *std::min_element(s.begin(), s.end());
    if (!(mx / mn > threshold)) return -1;
    int axis = -1;
    for (int a = 0; a < 3; ++a) {
      if (s[a] == mx) {
        if (axis >= 0) return -2;  // two coarse axes: nnU-Net resamples jointly
        axis = a;
      }
    }
    return axis;
  };
  int axis = coarse_axis(from_spacing);
  if (axis == -1) axis = coarse_axis(to_spacing);
  if (axis >= 0) modes[axis] = Interp::kNearest;
  return modes;
}

std::array<int64_t, 3> ResampledSize(const std::array<int64_t, 3>& size, const std::array<double, 3>& from_spacing,
                                     const std::array<double, 3>& to_spacing) {
  std::array<int64_t, 3> out;
  for (int a = 0; a < 3; ++a) {
    // nearbyint rounds halves to even under the default rounding mode, as np.round.
    const double v = std::nearbyint(static_cast<double>(size[a]) * from_spacing[a] / to_spacing[a]);
    // A hostile spacing ratio gives a size no cast may take: saturate, and
    // let the callers' checked products refuse it.
    out[a] = std::max<int64_t>(1, imageio::CheckedFloor(v).value_or(std::numeric_limits<int64_t>::max()));
  }
  return out;
}

namespace {

// The same with tensor reductions, for any device and dtype.
std::array<std::array<int64_t, 2>, 3> NonzeroBoundingBoxTensors(const torch::Tensor& x) {
  const torch::Tensor mask = (x != 0).any(0);  // (D, H, W)
  std::array<std::array<int64_t, 2>, 3> box;
  for (int a = 0; a < 3; ++a) box[a] = {0, mask.size(a)};
  if (!mask.any().item<bool>()) return box;
  for (int a = 0; a < 3; ++a) {
    std::vector<int64_t> others;
    for (int b = 0; b < 3; ++b)
      if (b != a) others.push_back(b);
    const torch::Tensor profile = mask.any(others[1]).any(others[0]);  // along axis a
    const torch::Tensor idx = profile.nonzero().flatten();
    box[a] = {idx.min().item<int64_t>(), idx.max().item<int64_t>() + 1};
  }
  return box;
}

}  // namespace

std::array<std::array<int64_t, 2>, 3> NonzeroBoundingBox(const torch::Tensor& x) {
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat || !x.is_contiguous())
    return NonzeroBoundingBoxTensors(x);
  // One pass over the voxels, rows in parallel: LibTorch 1.13's reductions
  // over the non-contiguous axes made this 0.25 s of a 512 x 512 x 120 CT.
  const int64_t C = x.size(0), D = x.size(1), H = x.size(2), W = x.size(3);
  const float* data = x.data_ptr<float>();
  struct Box {
    int64_t lo[3] = {INT64_MAX, INT64_MAX, INT64_MAX}, hi[3] = {-1, -1, -1};
  };
  std::mutex mu;
  Box all;
  at::parallel_for(0, D, 1, [&](int64_t begin, int64_t end) {
    Box b;
    for (int64_t d = begin; d < end; ++d)
      for (int64_t h = 0; h < H; ++h) {
        int64_t first = W, last = -1;
        for (int64_t c = 0; c < C; ++c) {
          const float* row = data + ((c * D + d) * H + h) * W;
          int64_t i = 0;
          while (i < first && row[i] == 0.0f) ++i;
          if (i < first) first = i;
          int64_t j = W - 1;
          while (j > last && row[j] == 0.0f) --j;
          if (j > last) last = j;
        }
        if (last < 0) continue;  // an empty row
        b.lo[0] = std::min(b.lo[0], d);
        b.hi[0] = std::max(b.hi[0], d);
        b.lo[1] = std::min(b.lo[1], h);
        b.hi[1] = std::max(b.hi[1], h);
        b.lo[2] = std::min(b.lo[2], first);
        b.hi[2] = std::max(b.hi[2], last);
      }
    std::lock_guard<std::mutex> lock(mu);
    for (int a = 0; a < 3; ++a) {
      all.lo[a] = std::min(all.lo[a], b.lo[a]);
      all.hi[a] = std::max(all.hi[a], b.hi[a]);
    }
  });
  if (all.hi[0] < 0) return {{{0, D}, {0, H}, {0, W}}};  // no non-zero voxel: the whole volume
  return {{{all.lo[0], all.hi[0] + 1}, {all.lo[1], all.hi[1] + 1}, {all.lo[2], all.hi[2] + 1}}};
}

}  // namespace upp::preprocessing
