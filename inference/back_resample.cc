// The two ways of back_resample.h. BackResampleBorders is hand-written
// rather than LibTorch calls; BackResampleFull is LibTorch throughout, so it
// runs wherever the accumulators live.
#include "inference/back_resample.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "inference/windows.h"

namespace upp::inference {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Labels fit in a byte up to 256 classes; a quarter of the int32 memory.
torch::ScalarType LabelType(int64_t num_classes) { return num_classes <= 256 ? torch::kByte : torch::kInt; }

// What BackResampleRows reads besides the accumulators and source labels.
struct BorderShortcut {
  std::array<preprocessing::Taps, 3> taps;  // per network axis, output -> source
  std::array<const float*, 3> profile;      // per network axis, source weights
  std::array<int64_t, 3> src_size, out_size;
  std::array<int64_t, 3> out_stride;  // in the output label buffer, per network axis
  int64_t num_classes = 0;
};

// Output slices [o0_begin, o0_end) back on the input grid on the CPU, label
// by label, without resampling every class probability at every output
// voxel; the voxels per label added to `counts`.
//
// Why this is exact: an output voxel's interpolated probabilities are one
// convex combination (the same weights for every class) of the normalised
// probabilities at the up to 8 source voxels it reads. If class k is the
// first maximum at each of them (p_j < p_k for j < k, p_j <= p_k for j > k),
// the combination keeps both inequalities, so k is the first maximum of the
// interpolated probabilities too. Only voxels whose sources disagree (organ
// borders: a few per cent) are interpolated in full, all classes at once.
// Exact in exact arithmetic; in float32 the two ways round differently, so
// where two classes are within an ulp of each other they may pick different
// ones (the test allows 2 such voxels).
// Labels are written straight into the input-order output through strides,
// which also does the transpose and the paste into the crop box.
//
// Hand-written rather than LibTorch calls because the saving is in what is
// never computed: LibTorch would materialise K x output-grid probabilities
// (nnU-Net's way, kept for CUDA, for mostly-border outputs and for
// BackResampling::kFull).
template <typename Acc, typename Label>
void BackResampleRows(const BorderShortcut& b, const Acc* acc, const std::array<int64_t, 4>& acc_stride,
                      const Label* src_labels, int64_t o0_begin, int64_t o0_end, uint16_t* out, int64_t* counts) {
  const int64_t H = b.src_size[1], W = b.src_size[2], K = b.num_classes;
  std::vector<float> probs(K);
  for (int64_t o0 = o0_begin; o0 < o0_end; ++o0) {
    const int64_t z[2] = {b.taps[0].i0[o0], b.taps[0].i1[o0]};
    const float wz[2] = {1.0f - b.taps[0].w1[o0], b.taps[0].w1[o0]};
    for (int64_t o1 = 0; o1 < b.out_size[1]; ++o1) {
      const int64_t y[2] = {b.taps[1].i0[o1], b.taps[1].i1[o1]};
      const float wy[2] = {1.0f - b.taps[1].w1[o1], b.taps[1].w1[o1]};
      const Label* rows[4] = {src_labels + (z[0] * H + y[0]) * W, src_labels + (z[0] * H + y[1]) * W,
                              src_labels + (z[1] * H + y[0]) * W, src_labels + (z[1] * H + y[1]) * W};
      uint16_t* dst = out + o0 * b.out_stride[0] + o1 * b.out_stride[1];
      for (int64_t o2 = 0; o2 < b.out_size[2]; ++o2) {
        const int64_t x0 = b.taps[2].i0[o2], x1 = b.taps[2].i1[o2];
        const Label l = rows[0][x0];
        Label label = l;
        if (rows[0][x1] != l || rows[1][x0] != l || rows[1][x1] != l || rows[2][x0] != l || rows[2][x1] != l ||
            rows[3][x0] != l || rows[3][x1] != l) {
          const int64_t x[2] = {x0, x1};
          const float wx[2] = {1.0f - b.taps[2].w1[o2], b.taps[2].w1[o2]};
          std::fill(probs.begin(), probs.end(), 0.0f);
          for (int c = 0; c < 8; ++c) {
            const int dz = c >> 2, dy = (c >> 1) & 1, dx = c & 1;
            // Each source's accumulated sum divided by its total window
            // weight: the normalised probability there.
            const float f =
                wz[dz] * wy[dy] * wx[dx] / (b.profile[0][z[dz]] * b.profile[1][y[dy]] * b.profile[2][x[dx]]);
            if (f == 0.0f) continue;
            const Acc* a = acc + z[dz] * acc_stride[1] + y[dy] * acc_stride[2] + x[dx] * acc_stride[3];
            for (int64_t k = 0; k < K; ++k) probs[k] += f * static_cast<float>(a[k * acc_stride[0]]);
          }
          label = 0;
          for (int64_t k = 1; k < K; ++k)
            if (probs[k] > probs[label]) label = static_cast<Label>(k);
        }
        dst[o2 * b.out_stride[2]] = label;
        ++counts[label];
      }
    }
  }
}

// The label (first maximum over classes) of source slices [d, d + n) of the
// accumulators; the argmax of the sums is the argmax of the normalised
// probabilities, the weight being one positive number per voxel.
torch::Tensor SourceLabels(const torch::Tensor& acc, int64_t d, int64_t n, torch::ScalarType type) {
  return ArgmaxChannels(acc.narrow(1, d, n).to(torch::kFloat), type);
}

// The label at every source voxel, a few slices at a time (slabs of about
// 32 MiB of float32 probabilities).
torch::Tensor SourceLabelGrid(const torch::Tensor& acc, const std::array<int64_t, 3>& grid,
                              torch::ScalarType label_type) {
  const int64_t k = acc.size(0);
  torch::Tensor src = torch::empty({grid[0], grid[1], grid[2]}, label_type);
  const int64_t slab = std::max<int64_t>(1, (int64_t{32} << 20) / std::max<int64_t>(1, k * grid[1] * grid[2] * 4));
  for (int64_t d = 0; d < grid[0]; d += slab) {
    const int64_t n = std::min(slab, grid[0] - d);
    src.narrow(0, d, n).copy_(SourceLabels(acc, d, n, label_type));
  }
  return src;
}

// The shortcut's taps, profiles and output strides. `profile_f` holds the
// float32 profiles the shortcut points into: keep it while it is used.
BorderShortcut MakeShortcut(const std::array<torch::Tensor, 3>& profile, const BackResampleGrids& grids,
                            const torch::Tensor& region, int64_t num_classes, std::array<torch::Tensor, 3>* profile_f) {
  BorderShortcut b;
  for (int a = 0; a < 3; ++a) {
    b.taps[a] = grids.taps[a];
    (*profile_f)[a] = profile[a].to(torch::kFloat).contiguous();
    b.profile[a] = (*profile_f)[a].data_ptr<float>();
    b.src_size[a] = grids.source[a];
    b.out_size[a] = grids.output[a];
    b.out_stride[a] = region.stride(a);
  }
  b.num_classes = num_classes;
  return b;
}

// BackResampleRows over all output slices, in parallel; the voxel count per
// class.
std::vector<int64_t> BackResampleAllRows(const BorderShortcut& b, const torch::Tensor& acc, const torch::Tensor& src,
                                         uint16_t* out) {
  const int64_t k = b.num_classes;
  const std::array<int64_t, 4> acc_stride{acc.stride(0), acc.stride(1), acc.stride(2), acc.stride(3)};
  absl::Mutex counts_mu;
  std::vector<int64_t> counts(k, 0);
  at::parallel_for(0, b.out_size[0], 1, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> local(k, 0);
    // One instantiation per accumulator type x label type.
    auto rows = [&](const auto* accumulators) {
      if (src.scalar_type() == torch::kByte)
        BackResampleRows(b, accumulators, acc_stride, src.data_ptr<uint8_t>(), begin, end, out, local.data());
      else
        BackResampleRows(b, accumulators, acc_stride, src.data_ptr<int32_t>(), begin, end, out, local.data());
    };
    if (acc.scalar_type() == torch::kHalf)
      rows(acc.data_ptr<at::Half>());
    else
      rows(acc.data_ptr<float>());
    absl::MutexLock lock(&counts_mu);
    for (int64_t c = 0; c < k; ++c) counts[c] += local[c];
  });
  return counts;
}

// Normalised probabilities of source slices [lo, hi): the sums divided by
// the window weights, float32, in a copy: float32 accumulators' `to` would
// return a view, and dividing it in place divided the slices two slabs
// share twice (BackResample.BoxedFullResamplingEqualsTheShortcut).
torch::Tensor NormalisedSlices(const torch::Tensor& acc, const std::array<torch::Tensor, 3>& profile,
                               const torch::Tensor& plane_weights, int64_t lo, int64_t hi) {
  torch::Tensor src = acc.narrow(1, lo, hi - lo).to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
  src.div_((profile[0].narrow(0, lo, hi - lo).view({-1, 1, 1}) * plane_weights).unsqueeze(0));
  return src;
}

// The last axis of `y` (K, n, H, W_src: every class along the first two
// axes already, float32, contiguous, CPU) resampled through `taps` and the
// argmax over classes taken at once, into `lab` (n, H, W_out); the voxels
// per label added to `counts`. The same arithmetic as Resample1D (a + w1 *
// (b - a) in float32, no fused multiply-add on this build's baseline x86-64)
// and the same first maximum as ArgmaxChannels, so the same labels; but the
// K x n x H x W_out probabilities (4.4 GB for 14 classes on a 512 x 512 x 300
// CT) are never written and read back: each row's classes (K x W_src floats)
// stay in cache. Hand-written because LibTorch has no fused
// resample-and-argmax; boxed grids (a crop's or a subset's) took 8.5 s of
// `fastest`'s 12.9 s on 14 random classes through index_select and
// ArgmaxChannels.
template <typename Label>
void LastAxisArgmax(const torch::Tensor& y, const preprocessing::Taps& taps, bool linear, torch::Tensor* lab,
                    int64_t* counts) {
  const int64_t K = y.size(0), rows = y.size(1) * y.size(2), w_src = y.size(3);
  const int64_t w_out = static_cast<int64_t>(taps.i0.size());
  const float* base = y.data_ptr<float>();
  Label* out = lab->data_ptr<Label>();
  absl::Mutex counts_mu;
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> best(w_out), value(w_out);
    std::vector<Label> index(w_out);
    std::vector<int64_t> local(K, 0);
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        const float* row = base + (k * rows + r) * w_src;
        for (int64_t o = 0; o < w_out; ++o) {
          const float a = row[taps.i0[o]];
          value[o] = linear ? a + taps.w1[o] * (row[taps.i1[o]] - a) : a;
        }
        if (k == 0) {
          std::copy(value.begin(), value.end(), best.begin());
          std::fill(index.begin(), index.end(), Label{0});
          continue;
        }
        for (int64_t o = 0; o < w_out; ++o)
          if (value[o] > best[o]) {
            best[o] = value[o];
            index[o] = static_cast<Label>(k);
          }
      }
      std::copy(index.begin(), index.end(), out + r * w_out);
      for (int64_t o = 0; o < w_out; ++o) ++local[index[o]];
    }
    absl::MutexLock lock(&counts_mu);
    for (int64_t k = 0; k < K; ++k) counts[k] += local[k];
  });
}

// Output slices [o0, o1) of every class along the first axis, from `src`
// (source slices from `lo`, through `taps`).
torch::Tensor ResampleFirstAxis(const torch::Tensor& src, const preprocessing::Taps& taps, int64_t o0, int64_t o1,
                                int64_t lo, const BackResampleGrids& grids) {
  const torch::Device device = src.device();
  std::vector<int64_t> i0(taps.i0.begin() + o0, taps.i0.begin() + o1);
  std::vector<int64_t> i1(taps.i1.begin() + o0, taps.i1.begin() + o1);
  std::vector<float> w1(taps.w1.begin() + o0, taps.w1.begin() + o1);
  for (auto& v : i0) v -= lo;
  for (auto& v : i1) v -= lo;
  const int64_t n = o1 - o0;
  torch::Tensor a = src.index_select(1, torch::from_blob(i0.data(), {n}, torch::kLong).to(device));
  if (grids.modes[0] == preprocessing::Interp::kLinear) {
    torch::Tensor b = src.index_select(1, torch::from_blob(i1.data(), {n}, torch::kLong).to(device));
    a.add_(torch::from_blob(w1.data(), {1, n, 1, 1}, torch::kFloat).to(device) * (b - a));
  }
  return a;
}

// Output slices [o0, o1) of every class: ResampleFirstAxis, then the other
// two axes.
torch::Tensor ResampleSlab(const torch::Tensor& src, const preprocessing::Taps& taps, int64_t o0, int64_t o1,
                           int64_t lo, const BackResampleGrids& grids) {
  torch::Tensor a = ResampleFirstAxis(src, taps, o0, o1, lo, grids);
  const int64_t n = o1 - o0;
  if (grids.whole) return preprocessing::ResampleSeparable(a, {n, grids.output[1], grids.output[2]}, grids.modes);
  a = preprocessing::Resample1D(a, 2, grids.taps[1], grids.modes[1]);
  return preprocessing::Resample1D(a, 3, grids.taps[2], grids.modes[2]);
}

}  // namespace

BackResampleGrids BackResampleGrids::Whole(const std::array<int64_t, 3>& source, const std::array<int64_t, 3>& output,
                                           const std::array<preprocessing::Interp, 3>& modes) {
  BackResampleGrids g{source, output, modes, {}, true};
  for (int a = 0; a < 3; ++a) g.taps[a] = preprocessing::ResamplingTaps(source[a], output[a], modes[a]);
  return g;
}

double BorderShare(const torch::Tensor& acc, preprocessing::Interp first_axis) {
  const int64_t D = acc.size(1), H = acc.size(2), W = acc.size(3);
  if (H < 2 || W < 2) return 0.0;
  const int64_t depth = first_axis == preprocessing::Interp::kLinear && D > 1 ? 2 : 1;
  int64_t cells = 0, border = 0;
  for (int64_t d = 0; d + depth <= D; d += 32) {
    const torch::Tensor lab = SourceLabels(acc, d, depth, torch::kInt);
    const torch::Tensor ref = lab[0].narrow(0, 0, H - 1).narrow(1, 0, W - 1);
    torch::Tensor differs = torch::zeros(ref.sizes(), torch::kBool);
    for (int64_t z = 0; z < depth; ++z)
      for (int64_t dy = 0; dy < 2; ++dy)
        for (int64_t dx = 0; dx < 2; ++dx) differs.logical_or_(ref != lab[z].narrow(0, dy, H - 1).narrow(1, dx, W - 1));
    border += differs.sum().item<int64_t>();
    cells += (H - 1) * (W - 1);
  }
  return cells == 0 ? 0.0 : static_cast<double>(border) / static_cast<double>(cells);
}

torch::Tensor BackResampleBorders(const torch::Tensor& acc, const std::array<torch::Tensor, 3>& profile,
                                  const BackResampleGrids& grids, const torch::Tensor& region, StageTimes* times) {
  const int64_t k = acc.size(0);
  const auto start = Clock::now();
  const torch::Tensor src = SourceLabelGrid(acc, grids.source, LabelType(k));
  times->argmax_paste = Seconds(start);

  const auto t_back = Clock::now();
  std::array<torch::Tensor, 3> profile_f;
  const BorderShortcut b = MakeShortcut(profile, grids, region, k, &profile_f);
  uint16_t* out = reinterpret_cast<uint16_t*>(region.data_ptr<int16_t>());
  const std::vector<int64_t> counts = BackResampleAllRows(b, acc, src, out);
  times->resample_back = Seconds(t_back);
  return torch::tensor(counts, torch::kLong);
}

torch::Tensor BackResampleFull(const torch::Tensor& acc, const std::array<torch::Tensor, 3>& profile,
                               const BackResampleGrids& grids, const torch::Tensor& region, StageTimes* times) {
  // nnU-Net's way: every class probability resampled to the output grid
  // (slab by slab), then the argmax.
  const torch::Tensor plane_weights = profile[1].view({-1, 1}) * profile[2].view({1, -1});
  const auto start = Clock::now();
  double argmax_s = 0;
  const int64_t k = acc.size(0);
  const auto& out_t = grids.output;
  const torch::ScalarType label_type = LabelType(k);
  torch::Tensor labels_t = torch::empty({out_t[0], out_t[1], out_t[2]}, label_type);
  torch::Tensor counts = torch::zeros({k}, torch::kLong);
  const preprocessing::Taps& taps = grids.taps[0];
  // Output slabs of about 64 MiB of probabilities on the output grid.
  const int64_t slab = std::max<int64_t>(1, (int64_t{64} << 20) / std::max<int64_t>(1, k * out_t[1] * out_t[2] * 4));
  for (int64_t o0 = 0; o0 < out_t[0]; o0 += slab) {
    const int64_t o1 = std::min(out_t[0], o0 + slab);
    const int64_t lo = *std::min_element(taps.i0.begin() + o0, taps.i0.begin() + o1);
    const int64_t hi = *std::max_element(taps.i1.begin() + o0, taps.i1.begin() + o1) + 1;
    const torch::Tensor src = NormalisedSlices(acc, profile, plane_weights, lo, hi);
    if (!grids.whole && src.is_cpu()) {
      // A box: the last axis and the argmax fused (LastAxisArgmax), the
      // labels straight into their slab.
      const torch::Tensor y =
          preprocessing::Resample1D(ResampleFirstAxis(src, taps, o0, o1, lo, grids), 2, grids.taps[1], grids.modes[1])
              .contiguous();
      torch::Tensor lab = labels_t.narrow(0, o0, o1 - o0);
      std::vector<int64_t> slab_counts(k, 0);
      const bool linear = grids.modes[2] == preprocessing::Interp::kLinear;
      if (label_type == torch::kByte)
        LastAxisArgmax<uint8_t>(y, grids.taps[2], linear, &lab, slab_counts.data());
      else
        LastAxisArgmax<int32_t>(y, grids.taps[2], linear, &lab, slab_counts.data());
      counts += torch::tensor(slab_counts, torch::kLong);
      continue;
    }
    torch::Tensor probs = ResampleSlab(src, taps, o0, o1, lo, grids);
    const auto t_argmax = Clock::now();
    torch::Tensor lab = ArgmaxChannels(probs, label_type);  // (n, H, W)
    counts += torch::bincount(lab.flatten().to(torch::kLong), {}, k).cpu();
    labels_t.narrow(0, o0, o1 - o0).copy_(lab);
    argmax_s += Seconds(t_argmax);
  }
  times->resample_back = Seconds(start) - argmax_s;
  const auto t_paste = Clock::now();
  region.copy_(labels_t.cpu());
  times->argmax_paste = argmax_s + Seconds(t_paste);
  return counts;
}

}  // namespace upp::inference
