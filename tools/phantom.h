// Synthetic abdominal CT phantoms with ground-truth labels, for training and
// testing the project's default model (not anatomy: ellipsoids with smooth
// random deformations and realistic Hounsfield units).
//
// A phantom is an Anatomy drawn from a seed (organ sizes, positions, HU,
// deformations, rotation), defined in millimetres in LPS patient coordinates
// (x to the patient's left, y posterior, z superior), then rasterised on any
// grid: the same patient at any spacing. Rasterising adds partial-volume blur
// and Gaussian noise. Threading: pure functions; Rasterize parallelises over
// slices with at::parallel_for.
#ifndef UPP_TOOLS_PHANTOM_H_
#define UPP_TOOLS_PHANTOM_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "imageio/geometry.h"
#include "preprocessing/plan.h"

namespace upp::tools {

enum PhantomLabel : uint16_t {
  kBackground = 0,
  kLiver,
  kSpleen,
  kRightKidney,
  kLeftKidney,
  kAorta,
  kSpine,
  kStomach,
  kNumPhantomClasses
};
std::vector<preprocessing::LabelInfo> PhantomLabels();
constexpr int kPhantomGeneratorVersion = 1;

// One organ: an ellipsoid (or, with infinite z extent, an elliptic cylinder)
// with a smooth random displacement of its surface.
struct Organ {
  uint16_t label = 0;
  std::array<double, 3> centre{}, radii{};
  double hu = 0;
  std::array<double, 3> wave_freq{}, wave_phase{};
  double wave_amp = 0;  // mm
};

struct Anatomy {
  double body_a = 160, body_b = 110, fat = 15;  // body semi-axes (LR, AP), fat layer (mm)
  double rotation = 0;                          // about z (radians)
  std::array<double, 3> shift{};                // mm
  double tissue_hu = 40, fat_hu = -100, noise_hu = 12;
  double spine_radius = 20;
  std::vector<Organ> organs;  // painted in order; later ones win
};

Anatomy RandomAnatomy(uint64_t seed);

// A grid for the anatomy: in-plane spacing in [0.6, 1.0] mm, slices in
// [1, 5] mm, a field of view of 380-460 mm (at most max_inplane voxels) and
// 160-300 mm along z (at most max_slices), centred on the patient.
imageio::Geometry RandomGeometry(uint64_t seed, int64_t max_inplane = 512, int64_t max_slices = 300);
// A grid with given spacing covering [-fov/2, fov/2] in x, y, z (mm).
imageio::Geometry GridFor(std::array<double, 3> spacing, std::array<double, 3> fov_mm);

struct PhantomImage {
  imageio::Geometry geometry;
  std::vector<float> hu;         // x fastest
  std::vector<uint16_t> labels;  // x fastest
};
// Rasterises `anatomy` on `geometry` (labels at voxel centres; HU blurred by
// one voxel's partial volume, plus noise drawn from `noise_seed`).
PhantomImage Rasterize(const Anatomy& anatomy, const imageio::Geometry& geometry, uint64_t noise_seed);

// Mean Dice per label 1..kNumPhantomClasses-1 of `predicted` against `truth`
// (equal sizes). A label absent from both counts as 1.
std::vector<double> DicePerLabel(const std::vector<uint16_t>& truth, const std::vector<uint16_t>& predicted,
                                 int num_classes = kNumPhantomClasses);

// The share of voxels with the same label in `a` and `b`; 0 when their sizes
// differ or they are empty.
double LabelAgreement(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b);

// HU rounded to int16.
std::vector<int16_t> ToInt16(const std::vector<float>& hu);

// The phantom as a DICOM CT series (one Part 10 file per slice, explicit VR
// little endian, CT Image Storage) through DCMTK. Identifiers are synthetic
// ("PHANTOM^SYNTHETIC", ID "PHANTOM-<seed>", no dates of birth); UIDs are
// generated. Slices run along +z with the geometry's direction and origin.
std::vector<std::string> WriteCtSeries(const imageio::Geometry& geometry, const std::vector<int16_t>& hu,
                                       uint64_t seed);

}  // namespace upp::tools

#endif  // UPP_TOOLS_PHANTOM_H_
