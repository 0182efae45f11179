// The inference job around the network: volume -> windows -> label map,
// as the reference UNETR++ / nnU-Net (v1) inference does it, but with the
// network left out: whoever holds a SegmentationJob runs its windows, in any
// order, from any thread, in batches of any size (the server batches windows
// of many jobs together).
//
//   Create():  preprocessing (preprocessing/preprocess.h: crop, transpose,
//              resample, normalise, pad), then the windows and accumulators.
//   GetInput() / AddOutput(): one item = one window x one mirror variant;
//              AddOutput softmaxes the logits, un-flips them and accumulates
//              probability x Gaussian importance into the stitcher.
//   Finish():  divide by the accumulated weights, resample the class
//              probabilities back to the cropped original grid (linear;
//              nearest along the coarse axis when anisotropic), argmax, paste
//              into the full volume; label statistics in voxels and mL.
//
// Torch-free header (the server includes it); the implementation uses LibTorch.
// Memory: the job owns the preprocessed volume and the accumulators
// (classes x network grid, float32 or float16); the input volume is released
// at the end of Create(). Finish() works slab by slab, so its peak is the
// label map plus a few slabs.
#ifndef UPP_INFERENCE_JOB_H_
#define UPP_INFERENCE_JOB_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "imageio/geometry.h"
#include "imageio/volume.h"
#include "preprocessing/body_mask.h"
#include "preprocessing/plan.h"

namespace upp::inference {

enum class AccumulatorPrecision { kAuto, kFloat32, kFloat16 };

// How Finish() takes the class probabilities back to the input grid. Both
// give the same labels (see back_resample.cc for why).
enum class BackResampling {
  kAuto,         // kBordersOnly on the CPU unless most source cells are on a label border
  kFull,         // every class at every output voxel, slab by slab (nnU-Net's way; CUDA)
  kBordersOnly,  // CPU only: labels first, full interpolation only where they disagree
};

struct JobOptions {
  // Where the job's tensors live and its arithmetic runs: "cpu", "cuda",
  // "cuda:N". GetInput/AddOutput still take host buffers.
  std::string device = "cpu";
  std::optional<double> step;                   // overrides plan.step
  std::optional<std::vector<int>> mirror_axes;  // overrides plan.mirror_axes
  std::optional<preprocessing::CropMode> crop;  // overrides plan.crop (tools compare crops)
  // Input voxels, (z, y, x) [begin, end), whose labels are wanted (a label
  // subset's box, inference/label_subset.h), instead of the plan's crop;
  // everything outside is background.
  std::optional<preprocessing::VoxelBox> region;
  // How the box (`region`, else the crop's body box) is covered: by the
  // whole run's windows that touch it, so that its labels are the whole
  // run's; or, with `tile_box` (the `fast` mode), by windows of its own
  // tiling it on the same grid: fewer, with labels that differ where windows
  // overlap differently (job.cc, ChooseWindows).
  bool tile_box = false;
  // Without `tile_box`: the share of the patch, at each side of a window,
  // that does not count as touching the box (0: any overlap counts). A
  // window whose middle misses the box adds little there (its Gaussian
  // weight falls to exp(-2) a quarter patch from its centre), so a label
  // subset keeps nearly the whole run's labels with fewer windows
  // (inference/label_subset.h, kSubsetWindowInset); the box's labels are
  // then the sums of the windows that ran, no longer exactly the whole
  // run's. At most 0.5.
  double region_inset = 0.0;
  AccumulatorPrecision accumulator = AccumulatorPrecision::kAuto;
  // kAuto: float16 accumulators when float32 ones would exceed this.
  int64_t float32_accumulator_limit_bytes = int64_t{1} << 30;
  BackResampling back_resampling = BackResampling::kAuto;
};

// The `fast` mode (docs/server.md, "Speed modes") applied to `options`: the
// window step `step` and no mirroring where `options` names neither (a
// request's explicit ones win), and the box (the body's, or a label
// subset's) tiled by windows of its own. One definition for the server and
// the tools that measure it.
void ApplyFastMode(double step, JobOptions* options);

// Seconds spent per stage. The window stages are summed over all calls.
struct StageTimes {
  double crop = 0, resample = 0, normalize = 0;  // Create()
  double extract = 0, stitch = 0;                // GetInput(), AddOutput()
  double resample_back = 0, argmax_paste = 0;    // Finish()
};

struct LabelStats {
  int value = 0;
  int64_t voxels = 0;
  double volume_ml = 0;  // voxels x voxel volume (mm^3) / 1000
};

// What Create()'s crop saved, for progress events and the summary: windows
// outside the crop box never run (their voxels are background).
struct CropReport {
  // The crop applied: the plan's (ResolvedCrop, or JobOptions::crop), except
  // kNone when a body crop found no body.
  preprocessing::CropMode mode = preprocessing::CropMode::kNone;
  // The input voxels the windows covered, (x, y, z) index ranges [begin, end).
  std::array<std::array<int64_t, 2>, 3> box_xyz{};
  int64_t windows_uncropped = 0;  // windows of the uncropped input at the job's step
  int64_t windows_skipped = 0;    // windows_uncropped - num_windows(), never negative
  // Why those windows were left out, for people ("outside the body" /
  // "outside the non-zero region"); empty when none were.
  std::string reason;
};

// A label map on the input's exact grid.
struct LabelMap {
  imageio::Geometry geometry;
  std::vector<uint16_t> labels;   // geometry.NumVoxels() values, x fastest
  std::vector<LabelStats> stats;  // one per class 0..num_classes-1
};

class SegmentationJob {
 public:
  // Validates the plan and the volume (channels must equal the plan's), then
  // preprocesses. CPU-heavy: call it on a worker thread, not a reactor.
  static absl::StatusOr<std::unique_ptr<SegmentationJob>> Create(imageio::Volume volume,
                                                                 const preprocessing::Plan& plan,
                                                                 const JobOptions& options = {});
  // Bytes a job for this input will hold at its peak (preprocessed volume,
  // accumulators, label map), for admission control before any work.
  // INT64_MAX when the figure would not fit (refuse it).
  static int64_t EstimateBytes(const imageio::Geometry& geometry, int64_t channels, const preprocessing::Plan& plan,
                               const JobOptions& options = {});
  // An upper bound of num_items() for this input (windows of the uncropped
  // grid x mirror variants), computed without building anything, for the
  // window limits checked before Create(); INT64_MAX when it would not fit.
  static int64_t CountItems(const imageio::Geometry& geometry, const preprocessing::Plan& plan,
                            const JobOptions& options = {});
  ~SegmentationJob();

  int64_t num_windows() const;
  int num_variants() const;  // 2^(number of mirror axes)
  int64_t num_items() const { return num_windows() * num_variants(); }
  const CropReport& crop_report() const;
  // crop_report().windows_skipped x num_variants(): in num_items()' units
  // (the server's progress and summary count items as windows).
  int64_t items_skipped_by_crop() const { return crop_report().windows_skipped * num_variants(); }
  int64_t items_done() const;
  bool complete() const { return items_done() == num_items(); }
  int64_t input_channels() const;
  int64_t num_classes() const;
  std::array<int64_t, 3> patch() const;         // (D, H, W)
  std::array<int64_t, 3> network_grid() const;  // resampled size before padding, (D, H, W)
  int64_t input_floats() const;                 // per item: channels x patch
  int64_t output_floats() const;                // per item: classes x patch

  // Writes item `item`'s network input (channels, D, H, W), float32, to
  // `dst`. Thread-safe; any order.
  absl::Status GetInput(int64_t item, float* dst) const;
  // Accumulates the network's logits (classes, D, H, W), float32, for `item`.
  // Thread-safe; any order; each item once (FAILED_PRECONDITION otherwise).
  // Returns true when this completed the job.
  absl::StatusOr<bool> AddOutput(int64_t item, const float* logits);
  // Once, after the last AddOutput: the label map on the input's grid.
  absl::StatusOr<LabelMap> Finish();

  StageTimes timings() const;

 private:
  struct Impl;
  explicit SegmentationJob(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Runs a batch: `input` holds `batch` windows (channels x patch each), the
// runner writes `batch` x classes x patch logits to `logits`.
using BatchRunner = std::function<absl::Status(const float* input, int64_t batch, float* logits)>;

// The whole pipeline on one thread, in batches of `batch_size` items.
absl::StatusOr<LabelMap> SegmentVolume(imageio::Volume volume, const preprocessing::Plan& plan, const BatchRunner& run,
                                       int64_t batch_size = 1, const JobOptions& options = {},
                                       StageTimes* times = nullptr, CropReport* crop = nullptr);

}  // namespace upp::inference

#endif  // UPP_INFERENCE_JOB_H_
