#include "inference/job.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "imageio/checked_math.h"
#include "inference/back_resample.h"
#include "inference/stitch.h"
#include "inference/windows.h"
#include "model/device.h"
#include "preprocessing/body_mask.h"
#include "preprocessing/preprocess.h"
#include "preprocessing/resampling.h"

namespace upp::inference {
namespace {

using Clock = std::chrono::steady_clock;

// Windows of the uncropped input at `step`; INT64_MAX when the count would
// not fit.
int64_t UncroppedWindows(const imageio::Geometry& geometry, const preprocessing::Plan& plan, double step) {
  const auto grid = preprocessing::PaddedGridBound(geometry, plan);
  int64_t windows = 1;
  for (int a = 0; a < 3; ++a)
    windows = imageio::OrMax(imageio::CheckedMul(windows, CountWindowStarts(grid[a], plan.patch[a], step)));
  return windows;
}

constexpr char kOutsideRegion[] = "outside the requested labels";

// A label subset's region (input voxels) in the cropped input's voxels
// (an MR's non-zero crop moves them), clamped to it.
absl::StatusOr<preprocessing::VoxelBox> RegionInCrop(const preprocessing::VoxelBox& region,
                                                     const std::array<std::array<int64_t, 2>, 3>& crop) {
  preprocessing::VoxelBox r;
  for (int t = 0; t < 3; ++t) {
    const int64_t n = crop[t][1] - crop[t][0];
    r[t] = {std::clamp<int64_t>(region[t][0] - crop[t][0], 0, n), std::clamp<int64_t>(region[t][1] - crop[t][0], 0, n)};
    if (r[t][0] >= r[t][1]) return absl::InvalidArgumentError("the requested region lies outside the volume");
  }
  return r;
}

const char* SkipReason(preprocessing::CropMode mode) {
  if (mode == preprocessing::CropMode::kBody) return "outside the body";
  return mode == preprocessing::CropMode::kNonzero ? "outside the non-zero region" : "";
}

// Exceptions from LibTorch end here (the edge of inference/).
absl::Status FromException(const char* stage, const std::exception& e) {
  return absl::InternalError(absl::StrCat(stage, " failed: ", e.what()));
}

}  // namespace

struct SegmentationJob::Impl {
  preprocessing::Plan plan;
  std::vector<int> mirror_axes;
  torch::Device device = torch::kCPU;
  imageio::Geometry geometry;                  // the input's
  std::array<std::array<int64_t, 2>, 3> crop;  // (z, y, x) tensor axes, [begin, end)
  std::array<int64_t, 3> cropped_t;            // cropped size, network axis order
  std::array<int64_t, 3> grid;                 // resampled size, network axis order
  std::array<int64_t, 3> pad_before;           // padding to reach the patch
  std::array<preprocessing::Interp, 3> modes;  // resampling per network axis
  // The box of the padded grid the windows cover (network order, [begin,
  // end)): all of it, or for a body crop the windows that touch the body.
  // `data`, the accumulators and the profiles hold this box only.
  std::array<std::array<int64_t, 2>, 3> region;
  // The box of the cropped input (network order) whose labels come from the
  // windows; background outside.
  std::array<std::array<int64_t, 2>, 3> out_box;
  std::vector<std::array<int64_t, 3>> windows;  // window starts in `region`
  torch::Tensor data;                           // (C, D, H, W) padded, normalised: `region` of it
  BackResampling back_resampling = BackResampling::kAuto;
  torch::Tensor item_weight;  // (pD, pH, pW): Gaussian importance / num_variants, each item's share
  // The sum of the Gaussians of all windows, per voxel of the padded grid, is
  // separable because the windows form a grid and the Gaussian is a product
  // of 1-D factors: weight(d, h, w) = profile[0][d] profile[1][h] profile[2][w].
  // Kept as three 1-D profiles instead of a (D, H, W) map (290 MB for a
  // 512 x 512 x 300 CT).
  std::array<torch::Tensor, 3> profile;

  absl::Mutex mu;
  torch::Tensor accumulator ABSL_GUARDED_BY(mu);  // (K, D, H, W) float32 or float16
  std::vector<bool> done ABSL_GUARDED_BY(mu);
  bool finished ABSL_GUARDED_BY(mu) = false;
  std::atomic<int64_t> items_done{0};

  CropReport crop_report;
  StageTimes times;  // Create/Finish stages; the window stages below
  std::atomic<int64_t> extract_ns{0}, stitch_ns{0};

  // AddOutput's stitching of one item's logits (host memory): in one pass on
  // the CPU (stitch.h), with ATen's operators on a GPU.
  void AddOnCpu(int64_t item, const float* logits);
  void AddOnDevice(int64_t item, const float* logits);
  // The region of `labels` inside the crop box and out_box, as a (D, H, W)
  // view in network axis order.
  torch::Tensor OutputRegion(uint16_t* labels) const;
  // Create()'s windows over `data` (the padded grid): all of them, or those
  // touching `body` (the input's (z, y, x) box; with `inset`, by more than
  // that share of a side, JobOptions::region_inset), or with `tile` windows
  // of their own over it; narrows `data` to them and sets region, out_box,
  // windows and the profiles.
  void ChooseWindows(const std::optional<preprocessing::VoxelBox>& body, bool tile = false, double inset = 0.0);
  void ReportCrop(preprocessing::CropMode mode, bool region);
  // Finish()'s way back: the accumulators' unpadded part (`acc`, `profile`
  // narrowed) and the taps from out_box to it.
  BackResampleGrids BackGrids(torch::Tensor* acc, std::array<torch::Tensor, 3>* profile) const;

  int num_variants() const { return 1 << mirror_axes.size(); }
  std::vector<int64_t> FlipDims(int variant) const {
    std::vector<int64_t> dims;
    for (size_t b = 0; b < mirror_axes.size(); ++b)
      if (variant & (1 << b)) dims.push_back(1 + mirror_axes[b]);
    return dims;
  }
  // Window w of a (C, D, H, W) tensor.
  torch::Tensor Window(const torch::Tensor& t, int64_t w) const {
    torch::Tensor v = t;
    for (int a = 0; a < 3; ++a) v = v.narrow(1 + a, windows[w][a], plan.patch[a]);
    return v;
  }
};

SegmentationJob::SegmentationJob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SegmentationJob::~SegmentationJob() = default;

// Why windows of the whole grid and not a crop of the input, as for MR: a
// cropped input is resampled onto a grid of its own (shifted by a fraction
// of a voxel, scaled by the rounding of its size) and tiled by windows of
// its own; the default model's labels then differ from the uncropped run's
// on 0.2-0.3 % of the voxels (two phantoms), over the 0.01 % issue 27
// allows. Windows of the whole grid give every voxel of the body box the
// windows, the sums and so the labels it gets without the crop; the box
// needs no margin for that. Labels are kept wherever that holds (around the
// body too), background elsewhere. The data, accumulators and
// back-resampling still shrink to the windows' box.
//
// A label subset's region is chosen the same way, but in `full` mode only
// windows whose middle touches its box count (`inset`, JobOptions::
// region_inset: the labels are then the whole run's but for near-ties a
// left-out window's low edge weight would have tipped), or with `tile` by
// windows of its own tiling its box on the same grid: an organ is about as
// large as a window, so the windows that touch its box are most of the
// body's (727 of 743 for the liver of 20 phantoms; 354 whose middle does),
// while its own tiling takes a few (12 of 209 for 6); the labels then
// differ from the whole run's where windows overlap differently (the
// `fast` mode's trade; liver Dice against the whole run 0.98), but never by
// the grid (a crop of the input resampled onto its own, shifted grid gave
// 0.96).
void SegmentationJob::Impl::ChooseWindows(const std::optional<preprocessing::VoxelBox>& body, bool tile, double inset) {
  const std::array<int64_t, 3> padded{data.size(1), data.size(2), data.size(3)};
  std::array<std::vector<int64_t>, 3> starts;
  bool whole = true;
  for (int a = 0; a < 3; ++a) {
    starts[a] = WindowStarts(padded[a], plan.patch[a], plan.step);
    region[a] = {0, padded[a]};
    out_box[a] = {0, cropped_t[a]};
    if (!body) continue;
    // The body's box on the network grid: the grid voxels its input voxels
    // read on the way back (Finish()'s taps), padded.
    const auto& box = (*body)[plan.transpose[a]];
    const preprocessing::Taps back = preprocessing::ResamplingTaps(grid[a], cropped_t[a], modes[a]);
    const int64_t g0 = back.i0[box[0]] + pad_before[a], g1 = back.i1[box[1] - 1] + 1 + pad_before[a];
    int64_t complete0 = 0, complete1 = 0;
    if (tile) {
      // At least a patch, centred on the box, inside the grid.
      const int64_t len = std::min(padded[a], std::max(g1 - g0, plan.patch[a]));
      const int64_t s0 = std::clamp<int64_t>(g0 - (len - (g1 - g0)) / 2, 0, padded[a] - len);
      region[a] = {s0, s0 + len};
      starts[a] = WindowStarts(len, plan.patch[a], plan.step);
      complete0 = s0;
      complete1 = s0 + len;
    } else {
      const auto& all = starts[a];
      // The windows [k0, k1) touch the box with more than `edge` of a side.
      const int64_t edge = static_cast<int64_t>(std::floor(std::clamp(inset, 0.0, 0.5) * plan.patch[a]));
      size_t k0 = 0, k1 = all.size();
      while (k0 + 1 < all.size() && all[k0] + plan.patch[a] - edge <= g0) ++k0;
      while (k1 > k0 + 1 && all[k1 - 1] + edge >= g1) --k1;
      // Still every box voxel under a window (a step over 0.5 could leave
      // an edge uncovered once windows are dropped).
      while (k0 > 0 && all[k0] > g0) --k0;
      while (k1 < all.size() && all[k1 - 1] + plan.patch[a] < g1) ++k1;
      region[a] = {all[k0], all[k1 - 1] + plan.patch[a]};
      // The grid voxels every window of which runs: their sums are the
      // uncropped run's. The box's are among them unless an inset dropped
      // windows over it; then the box's labels come from the windows that
      // ran.
      complete0 = k0 == 0 ? 0 : std::min(all[k0 - 1] + plan.patch[a], std::max(g0, region[a][0]));
      complete1 = k1 == all.size() ? padded[a] : std::max(all[k1], std::min(g1, region[a][1]));
      std::vector<int64_t> touching(all.begin() + k0, all.begin() + k1);
      for (int64_t& s : touching) s -= region[a][0];
      starts[a] = std::move(touching);
    }
    whole = whole && region[a][1] - region[a][0] == padded[a];
    // Labels only for the input voxels that read those grid voxels alone (a
    // second tap of weight 0 is not read): the uncropped run's labels (a
    // tiled region's: every voxel its windows cover).
    const int64_t u0 = std::max<int64_t>(complete0 - pad_before[a], 0);
    const int64_t u1 = std::min<int64_t>(complete1 - pad_before[a], grid[a]);
    int64_t c0 = 0, c1 = cropped_t[a];
    while (c0 < c1 && back.i0[c0] < u0) ++c0;
    while (c1 > c0 && (back.w1[c1 - 1] > 0 ? back.i1[c1 - 1] : back.i0[c1 - 1]) >= u1) --c1;
    out_box[a] = {c0, c1};
  }
  if (!whole) {
    for (int a = 0; a < 3; ++a) data = data.narrow(a + 1, region[a][0], region[a][1] - region[a][0]);
    data = data.clone();  // the rest of the grid goes back now
  }
  for (int64_t d : starts[0])
    for (int64_t h : starts[1])
      for (int64_t w : starts[2]) windows.push_back({d, h, w});
  const auto factors = GaussianFactors(plan.patch, plan.gaussian_sigma_scale);
  for (int a = 0; a < 3; ++a) {
    profile[a] = torch::zeros({data.size(a + 1)}, torch::kFloat);
    for (int64_t s : starts[a]) profile[a].narrow(0, s, plan.patch[a]).add_(factors[a]);
    profile[a] = profile[a].to(device);
  }
}

void SegmentationJob::Impl::ReportCrop(preprocessing::CropMode mode, bool region) {
  crop_report.mode = mode;
  for (int a = 0; a < 3; ++a) {
    const int t = plan.transpose[a];  // the input's tensor axis (z, y, x)
    crop_report.box_xyz[2 - t] = {crop[t][0] + out_box[a][0], crop[t][0] + out_box[a][1]};
  }
  crop_report.windows_uncropped = UncroppedWindows(geometry, plan, plan.step);
  crop_report.windows_skipped =
      std::max<int64_t>(0, crop_report.windows_uncropped - static_cast<int64_t>(windows.size()));
  if (crop_report.windows_skipped > 0) crop_report.reason = region ? kOutsideRegion : SkipReason(mode);
}

BackResampleGrids SegmentationJob::Impl::BackGrids(torch::Tensor* acc, std::array<torch::Tensor, 3>* profiles) const {
  BackResampleGrids grids;
  grids.modes = modes;
  for (int a = 0; a < 3; ++a) {
    const int64_t lo = std::max(region[a][0], pad_before[a]);
    const int64_t hi = std::min(region[a][1], pad_before[a] + grid[a]);
    *acc = acc->narrow(a + 1, lo - region[a][0], hi - lo);
    (*profiles)[a] = profile[a].narrow(0, lo - region[a][0], hi - lo);
    grids.source[a] = hi - lo;
    grids.output[a] = out_box[a][1] - out_box[a][0];
    grids.taps[a] = preprocessing::RegionTaps(grid[a], cropped_t[a], modes[a], out_box[a],
                                              {lo - pad_before[a], hi - pad_before[a]});
    grids.whole = grids.whole && grids.source[a] == grid[a] && grids.output[a] == cropped_t[a];
  }
  return grids;
}

absl::StatusOr<std::unique_ptr<SegmentationJob>> SegmentationJob::Create(imageio::Volume volume,
                                                                         const preprocessing::Plan& plan,
                                                                         const JobOptions& options) {
  if (auto s = plan.Validate(); !s.ok()) return s;
  if (auto s = volume.geometry.Validate(); !s.ok()) return s;
  if (volume.channels != plan.input_channels())
    return absl::InvalidArgumentError(
        absl::StrCat("the model takes ", plan.input_channels(), " input channel(s), the volume has ", volume.channels));
  const int64_t n = volume.geometry.NumVoxels();
  if (static_cast<int64_t>(volume.voxels.size()) != volume.channels * n)
    return absl::InvalidArgumentError("voxel buffer does not match the geometry");

  auto impl = std::make_unique<Impl>();
  impl->plan = plan;
  if (options.step) impl->plan.step = *options.step;
  if (options.mirror_axes) impl->plan.mirror_axes = *options.mirror_axes;
  if (options.crop) impl->plan.crop = *options.crop;
  if (auto s = impl->plan.Validate(); !s.ok()) return s;  // the overrides too
  impl->mirror_axes = impl->plan.mirror_axes;
  impl->geometry = volume.geometry;
  impl->back_resampling = options.back_resampling;
  if (impl->back_resampling == BackResampling::kBordersOnly && options.device != "cpu")
    return absl::InvalidArgumentError("back_resampling kBordersOnly runs on the CPU only");
  const preprocessing::Plan& p = impl->plan;

  const auto spec = model::ParseDevice(options.device);
  if (!spec)
    return absl::InvalidArgumentError(absl::StrCat("device \"", options.device, "\" is not cpu, cuda or cuda:N"));
  impl->device = spec->cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(spec->index)) : torch::kCPU;
  if (impl->device.is_cuda() && !torch::cuda::is_available())
    return absl::UnavailableError(absl::StrCat("device \"", options.device, "\": no CUDA in this build or machine"));
  const torch::Device device = impl->device;

  try {
    torch::NoGradGuard no_grad;
    auto pre = preprocessing::Preprocess(std::move(volume), p, device);
    if (!pre.ok()) return pre.status();
    impl->crop = pre->crop;
    impl->cropped_t = pre->cropped_t;
    impl->grid = pre->grid;
    impl->pad_before = pre->pad_before;
    impl->modes = pre->modes;
    impl->times.crop = pre->crop_seconds;
    impl->times.resample = pre->resample_seconds;
    impl->times.normalize = pre->normalize_seconds;
    impl->data = std::move(pre->data);  // `pre` must not keep the whole grid alive
    if (options.region) {
      auto region = RegionInCrop(*options.region, pre->crop);
      if (!region.ok()) return region.status();
      impl->ChooseWindows(*region, options.tile_box, options.region_inset);
    } else {
      impl->ChooseWindows(pre->body, options.tile_box);
    }
    impl->ReportCrop(pre->cropped_to, options.region.has_value());
    impl->item_weight =
        (GaussianImportance(p.patch, p.gaussian_sigma_scale) / static_cast<float>(impl->num_variants())).to(device);
    const torch::Tensor& data = impl->data;

    const int64_t padded_voxels = data.size(1) * data.size(2) * data.size(3);
    bool half = options.accumulator == AccumulatorPrecision::kFloat16;
    if (options.accumulator == AccumulatorPrecision::kAuto)
      half = padded_voxels * p.num_classes * 4 > options.float32_accumulator_limit_bytes;
    absl::MutexLock lock(&impl->mu);
    impl->accumulator = torch::zeros({p.num_classes, data.size(1), data.size(2), data.size(3)},
                                     torch::TensorOptions(device).dtype(half ? torch::kHalf : torch::kFloat));
    impl->done.assign(impl->windows.size() * impl->num_variants(), false);
  } catch (const std::exception& e) {
    return FromException("preprocessing", e);
  }
  return std::unique_ptr<SegmentationJob>(new SegmentationJob(std::move(impl)));
}

// Every product checked: a hostile spacing or size gives INT64_MAX, which no
// admission limit accepts, never a wrapped (negative) figure.
int64_t SegmentationJob::EstimateBytes(const imageio::Geometry& geometry, int64_t channels,
                                       const preprocessing::Plan& plan, const JobOptions& options) {
  const auto grid = preprocessing::PaddedGridBound(geometry, plan);
  const int64_t grid_voxels = imageio::OrMax(imageio::CheckedProduct({grid[0], grid[1], grid[2]}));
  const int64_t voxels =
      imageio::OrMax(imageio::CheckedProduct({geometry.size[0], geometry.size[1], geometry.size[2]}));
  const int64_t input = imageio::OrMax(imageio::CheckedProduct({channels, voxels, 4}));
  int64_t acc = imageio::OrMax(imageio::CheckedProduct({grid_voxels, plan.num_classes, 4}));
  if (acc != std::numeric_limits<int64_t>::max() &&
      (options.accumulator == AccumulatorPrecision::kFloat16 ||
       (options.accumulator == AccumulatorPrecision::kAuto && acc > options.float32_accumulator_limit_bytes)))
    acc /= 2;
  const int64_t data = imageio::OrMax(imageio::CheckedProduct({channels, grid_voxels, 4}));
  // Create(): input + resampled data and one resampling temporary; before
  // them, a body crop's labelling (freed before resampling).
  const preprocessing::CropMode crop = options.crop.value_or(plan.ResolvedCrop());
  const int64_t labelling = crop == preprocessing::CropMode::kBody ? preprocessing::BodyLabellingBytesBound(voxels) : 0;
  const int64_t create =
      imageio::OrMax(imageio::CheckedAdd(input, std::max(labelling, imageio::OrMax(imageio::CheckedMul(2, data)))));
  // Steady state and Finish(): data, accumulators, label map(s), slabs.
  const int64_t slabs =
      std::min<int64_t>(int64_t{256} << 20, imageio::OrMax(imageio::CheckedProduct({16, plan.num_classes, voxels})));
  const int64_t run = imageio::OrMax(
      imageio::CheckedAdd(imageio::OrMax(imageio::CheckedAdd(data, acc)),
                          imageio::OrMax(imageio::CheckedAdd(imageio::OrMax(imageio::CheckedMul(voxels, 3)), slabs))));
  return std::max(create, run);
}

int64_t SegmentationJob::CountItems(const imageio::Geometry& geometry, const preprocessing::Plan& plan,
                                    const JobOptions& options) {
  const double step = options.step.value_or(plan.step);
  if (!(step > 0)) return std::numeric_limits<int64_t>::max();
  const int64_t windows = UncroppedWindows(geometry, plan, step);
  const size_t axes = options.mirror_axes ? options.mirror_axes->size() : plan.mirror_axes.size();
  return imageio::OrMax(imageio::CheckedMul(windows, int64_t{1} << std::min<size_t>(axes, 3)));
}

int64_t SegmentationJob::num_windows() const { return impl_->windows.size(); }
const CropReport& SegmentationJob::crop_report() const { return impl_->crop_report; }
int SegmentationJob::num_variants() const { return impl_->num_variants(); }
int64_t SegmentationJob::items_done() const { return impl_->items_done.load(); }
int64_t SegmentationJob::input_channels() const { return impl_->plan.input_channels(); }
int64_t SegmentationJob::num_classes() const { return impl_->plan.num_classes; }
std::array<int64_t, 3> SegmentationJob::patch() const { return impl_->plan.patch; }
std::array<int64_t, 3> SegmentationJob::network_grid() const { return impl_->grid; }
int64_t SegmentationJob::input_floats() const {
  const auto& p = impl_->plan.patch;
  return input_channels() * p[0] * p[1] * p[2];
}
int64_t SegmentationJob::output_floats() const {
  const auto& p = impl_->plan.patch;
  return num_classes() * p[0] * p[1] * p[2];
}

StageTimes SegmentationJob::timings() const {
  StageTimes t = impl_->times;
  t.extract = impl_->extract_ns.load() * 1e-9;
  t.stitch = impl_->stitch_ns.load() * 1e-9;
  return t;
}

absl::Status SegmentationJob::GetInput(int64_t item, float* dst) const {
  if (item < 0 || item >= num_items())
    return absl::OutOfRangeError(absl::StrCat("window item ", item, " of ", num_items()));
  const auto start = Clock::now();
  try {
    torch::NoGradGuard no_grad;
    const int nv = impl_->num_variants();
    torch::Tensor w = impl_->Window(impl_->data, item / nv);
    const auto dims = impl_->FlipDims(static_cast<int>(item % nv));
    if (!dims.empty()) w = w.flip(dims);
    const auto& p = impl_->plan.patch;
    torch::from_blob(dst, {input_channels(), p[0], p[1], p[2]}, torch::kFloat).copy_(w);
  } catch (const std::exception& e) {
    return FromException("window extraction", e);
  }
  impl_->extract_ns += std::chrono::nanoseconds(Clock::now() - start).count();
  return absl::OkStatus();
}

absl::StatusOr<bool> SegmentationJob::AddOutput(int64_t item, const float* logits) {
  if (item < 0 || item >= num_items())
    return absl::OutOfRangeError(absl::StrCat("window item ", item, " of ", num_items()));
  const auto start = Clock::now();
  Impl& m = *impl_;
  {
    absl::MutexLock lock(&m.mu);
    if (m.finished) return absl::FailedPreconditionError("the job is already finished");
    if (m.done[item]) return absl::FailedPreconditionError(absl::StrCat("window item ", item, " was added twice"));
    m.done[item] = true;
  }
  try {
    torch::NoGradGuard no_grad;
    if (m.device.is_cpu()) {
      m.AddOnCpu(item, logits);
    } else {
      m.AddOnDevice(item, logits);
    }
  } catch (const std::exception& e) {
    return FromException("stitching", e);
  }
  m.stitch_ns += std::chrono::nanoseconds(Clock::now() - start).count();
  // Nothing of the job may be touched after the increment: once the last
  // item is counted, its caller may finish and free the job while this
  // thread is still returning.
  const int64_t total = num_items();
  return ++m.items_done == total;
}

void SegmentationJob::Impl::AddOnCpu(int64_t item, const float* logits) {
  const int variant = static_cast<int>(item % num_variants());
  std::array<bool, 3> flip{false, false, false};
  for (int64_t dim : FlipDims(variant)) flip[dim - 1] = true;
  // One pass (stitch.h), all of it under the lock: the same work as the
  // device path's part outside the lock took longer than this whole call.
  absl::MutexLock lock(&mu);
  const torch::Tensor window = Window(accumulator, item / num_variants());
  AccumulatorWindow acc;
  acc.data = window.data_ptr();
  acc.half = window.scalar_type() == torch::kHalf;
  acc.class_stride = window.stride(0);
  acc.d_stride = window.stride(1);
  acc.h_stride = window.stride(2);
  TORCH_CHECK(item_weight.is_contiguous() && item_weight.scalar_type() == torch::kFloat,
              "stitching: the window weights must be contiguous float32");
  TORCH_CHECK(window.stride(3) == 1 && (acc.half || window.scalar_type() == torch::kFloat),
              "stitching: the accumulators must be float32 or float16 with contiguous rows");
  AddSoftmaxWindow(logits, plan.num_classes, plan.patch, flip, item_weight.data_ptr<float>(), acc);
}

void SegmentationJob::Impl::AddOnDevice(int64_t item, const float* logits) {
  const auto& p = plan.patch;
  // Softmax, un-flip and weighting outside the lock; only the sums inside.
  torch::Tensor probs =
      torch::from_blob(const_cast<float*>(logits), {plan.num_classes, p[0], p[1], p[2]}, torch::kFloat)
          .to(device)
          .softmax(0);
  const auto dims = FlipDims(static_cast<int>(item % num_variants()));
  if (!dims.empty()) probs = probs.flip(dims);
  probs.mul_(item_weight);
  absl::MutexLock lock(&mu);
  Window(accumulator, item / num_variants()).add_(probs);
}

torch::Tensor SegmentationJob::Impl::OutputRegion(uint16_t* labels) const {
  // uint16 has no LibTorch dtype; int16 has the same bits for 0..65535.
  torch::Tensor region =
      torch::from_blob(labels, {geometry.size[2], geometry.size[1], geometry.size[0]}, torch::kShort);
  for (int a = 0; a < 3; ++a) region = region.narrow(a, crop[a][0], crop[a][1] - crop[a][0]);
  region = region.permute({plan.transpose[0], plan.transpose[1], plan.transpose[2]});
  for (int a = 0; a < 3; ++a) region = region.narrow(a, out_box[a][0], out_box[a][1] - out_box[a][0]);
  return region;
}

absl::StatusOr<LabelMap> SegmentationJob::Finish() {
  Impl& m = *impl_;
  if (!complete())
    return absl::FailedPreconditionError(
        absl::StrCat("Finish() after ", items_done(), " of ", num_items(), " window items"));
  absl::MutexLock lock(&m.mu);
  if (m.finished) return absl::FailedPreconditionError("Finish() called twice");
  m.finished = true;
  const preprocessing::Plan& p = m.plan;
  const imageio::Geometry& g = m.geometry;
  LabelMap out;
  out.geometry = g;
  try {
    torch::NoGradGuard no_grad;
    m.data = torch::Tensor();  // the network input is no longer needed
    torch::Tensor acc = m.accumulator;
    std::array<torch::Tensor, 3> profile;
    const BackResampleGrids grids = m.BackGrids(&acc, &profile);
    const int64_t k = p.num_classes;
    const auto& out_t = grids.output;
    torch::Tensor counts;
    out.labels.assign(g.NumVoxels(), 0);
    bool border_only = m.back_resampling == BackResampling::kBordersOnly;
    if (m.back_resampling == BackResampling::kAuto)
      border_only = m.device.is_cpu() && BorderShare(acc, m.modes[0]) < kMaxBorderShare;
    const torch::Tensor region = m.OutputRegion(out.labels.data());
    if (border_only) {
      counts = BackResampleBorders(acc, profile, grids, region, &m.times);
    } else {
      counts = BackResampleFull(acc, profile, grids, region, &m.times);
    }
    m.accumulator = torch::Tensor();

    const double voxel_ml = g.spacing[0] * g.spacing[1] * g.spacing[2] / 1000.0;
    const int64_t outside = g.NumVoxels() - out_t[0] * out_t[1] * out_t[2];
    for (int64_t c = 0; c < k; ++c) {
      LabelStats s;
      s.value = static_cast<int>(c);
      s.voxels = counts[c].item<int64_t>() + (c == 0 ? outside : 0);
      s.volume_ml = static_cast<double>(s.voxels) * voxel_ml;
      out.stats.push_back(s);
    }
  } catch (const std::exception& e) {
    return FromException("postprocessing", e);
  }
  return out;
}

void ApplyFastMode(double step, JobOptions* options) {
  if (!options->step) options->step = step;
  if (!options->mirror_axes) options->mirror_axes = std::vector<int>{};
  options->tile_box = true;
}

absl::StatusOr<LabelMap> SegmentVolume(imageio::Volume volume, const preprocessing::Plan& plan, const BatchRunner& run,
                                       int64_t batch_size, const JobOptions& options, StageTimes* times,
                                       CropReport* crop) {
  auto job = SegmentationJob::Create(std::move(volume), plan, options);
  if (!job.ok()) return job.status();
  SegmentationJob& j = **job;
  batch_size = std::max<int64_t>(1, batch_size);
  std::vector<float> in(batch_size * j.input_floats());
  std::vector<float> out(batch_size * j.output_floats());
  for (int64_t first = 0; first < j.num_items(); first += batch_size) {
    const int64_t n = std::min(batch_size, j.num_items() - first);
    for (int64_t i = 0; i < n; ++i)
      if (auto s = j.GetInput(first + i, in.data() + i * j.input_floats()); !s.ok()) return s;
    if (auto s = run(in.data(), n, out.data()); !s.ok()) return s;
    for (int64_t i = 0; i < n; ++i)
      if (auto s = j.AddOutput(first + i, out.data() + i * j.output_floats()); !s.ok()) return s.status();
  }
  auto result = j.Finish();
  if (times) *times = j.timings();
  if (crop) *crop = j.crop_report();
  return result;
}

}  // namespace upp::inference
