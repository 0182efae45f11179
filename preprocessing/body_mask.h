// Where the patient is in a CT: the box the network has to see. Everything
// outside it is air (or a table, a blanket fold, a tube) that no window needs
// to run over: on a 512 x 512 CT with the usual field of view, a third of the
// windows or more lie over air. Used by preprocess.cc for the plan's
// `crop: body` (docs/preprocessing.md, "The plan file").
//
// Torch-free and dependency-free: a threshold and a 3-D connected-component
// labelling, written here because none of the project's Debian packages has
// one (no ITK, no cc3d; boost's disjoint sets are on some machines only as
// another package's dependency). The labelling works on runs of voxels along
// x, not on voxels: a CT's body is a few runs per row, so the labels take
// megabytes where a per-voxel label volume would take 4 bytes a voxel
// (300 MiB for 512 x 512 x 300).
#ifndef UPP_PREPROCESSING_BODY_MASK_H_
#define UPP_PREPROCESSING_BODY_MASK_H_

#include <array>
#include <cstdint>

namespace upp::preprocessing {

// A box of voxel indices, [begin, end) per axis, in (z, y, x) order as the
// volume's tensor axes (x fastest in memory).
using VoxelBox = std::array<std::array<int64_t, 2>, 3>;

struct BodyOptions {
  // Voxels above this are "not air". -500 HU lies halfway between air
  // (-1000) and fat (-100), so the body's outline does not move with noise
  // (12-50 HU in air) or with the partial volume of the skin; lung (-900 to
  // -700) falls below it, but the chest wall encloses the lungs, so the box
  // still does. Only channel 0 is read, in Hounsfield units.
  float threshold_hu = -500.0f;
  // Every component of at least this share of the largest one's voxels is
  // kept, not only the largest. Why not the largest alone: an arm lying
  // beside the trunk is often disconnected from it at -500 HU and is 10-15 %
  // of the trunk's voxels; losing it would make labels the model would have
  // given there silently background. What falls below 5 %: noise specks, a
  // blanket's fold, tubes, ECG leads and the thin shells of most tables;
  // keeping a table costs windows, never labels.
  double keep_fraction = 0.05;
  // More runs than voxels / this (a volume of noise, not a CT) and the
  // labelling gives up: no crop, as if nothing were found. Bounds the
  // labelling's memory at 5 bytes per input voxel (BodyLabellingBytesBound);
  // an abdominal CT has 1 to 3 runs per 512-voxel row (16 allowed); a chest
  // CT's vessels in the lungs add some, and at worst its crop is skipped.
  int64_t voxels_per_run = 32;
};

struct Body {
  // False when nothing is above the threshold or the volume is too
  // fragmented to label: the caller crops nothing.
  bool found = false;
  VoxelBox box{};  // the union of the kept components' boxes, no margin
  int64_t components = 0, kept = 0;
  int64_t kept_voxels = 0, largest_voxels = 0;
};

// The body of the CT whose channel 0 is `hu` (size_zyx[0] x [1] x [2] voxels,
// x fastest). Components are 6-connected (face neighbours): with the size
// rule above, diagonal contacts change which parts are kept only for parts
// that touch by a corner, where the windows around one cover the other anyway.
Body FindBody(const float* hu, const std::array<int64_t, 3>& size_zyx, const BodyOptions& options = {});

// The labelling's memory bound for `voxels` input voxels (the runs and their
// union-find), for the job's memory estimate.
int64_t BodyLabellingBytesBound(int64_t voxels, const BodyOptions& options = {});

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_BODY_MASK_H_
