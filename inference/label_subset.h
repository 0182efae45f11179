// A request for some labels only (RequestHeader.labels): where they are in a
// first, coarse label map (the box the full model then runs in), and the
// final label map cut down to them. Torch-free plain functions over a
// LabelMap; the server calls them between its two passes (docs/server.md,
// "Label subsets").
#ifndef UPP_INFERENCE_LABEL_SUBSET_H_
#define UPP_INFERENCE_LABEL_SUBSET_H_

#include <optional>
#include <vector>

#include "inference/job.h"
#include "preprocessing/body_mask.h"

namespace upp::inference {

// The margin around located labels when the configuration names none
// (ModelEntry.speed.subset_margin_mm): the fastest model's voxels are up to
// 8 mm, and an organ's edge it found may be a voxel off.
inline constexpr double kDefaultSubsetMarginMm = 20.0;

// The locating pass's window step, without mirroring: the locator needs
// only where the labels are, to within the margin, not their edges, so its
// windows need not overlap (a third of the windows of the plan's 0.5 in 3D).
// Measured on 20 phantoms: docs/model.md, "Speed modes".
inline constexpr double kLocateStep = 1.0;

// The `full` mode's subset: JobOptions::region_inset for its windows, the
// share of a window's side that does not count as touching the box. The
// liver of 20 phantoms (docs/model.md, "Speed modes"), windows after
// locating and Dice against a whole `full` run, mean (min): any overlap 727,
// 1.0 (exactly); 0.25: 515, 0.999998 (0.99999); 0.375: 354, 0.99982
// (0.9992); 0.5: 206, 0.9978 (0.9929, under issue 27's 0.995 per organ).
inline constexpr double kSubsetWindowInset = 0.375;

// The locating pass's options: kLocateStep, no mirroring, the plan's crop.
JobOptions LocatingOptions();

// The input-voxel box, (z, y, x) [begin, end), of every voxel of `map` that
// holds one of `values`, grown by `margin_mm` on each side (in voxels of the
// map's own spacing, rounded up) and clamped to the volume. nullopt when no
// voxel holds any of them.
std::optional<preprocessing::VoxelBox> LabelBox(const LabelMap& map, const std::vector<int>& values, double margin_mm);

// A subset's second pass, the one rule the server and the tools share:
// `options` narrowed to LabelBox(located, values, margin_mm). With `tile` (the
// `fast` mode) windows of their own tile the box; without it the whole run's
// windows whose middle (kSubsetWindowInset) touches the box run, so the
// labels there are nearly the whole run's. False, with `options` unchanged, when none of `values` was located
// (the answer is all background).
bool AimAtLabels(const LabelMap& located, const std::vector<int>& values, double margin_mm, bool tile,
                 JobOptions* options);

// Every voxel of a value not in `values` becomes background (0); the stats
// keep background (grown by those voxels) and `values` only.
void KeepLabels(const std::vector<int>& values, LabelMap* map);

}  // namespace upp::inference

#endif  // UPP_INFERENCE_LABEL_SUBSET_H_
