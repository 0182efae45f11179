// A picture of a segmentation: axial, coronal and sagittal slices through the
// input (CT window 400/40, or the 1st-99th percentile for other images) with
// the label map overlaid in the label colours, and a legend with each
// label's name and volume. Drawn and encoded with cairo (text, PNG).
//
// Orientation (docs/axes.md; LPS): axial seen from the feet (patient's left
// on the image's right, anterior up), coronal seen from the front, sagittal
// seen from the patient's left (anterior on the left); superior up. Pixels
// are scaled to the voxel spacing, so anatomy keeps its proportions.
#ifndef UPP_CLIENTS_CPP_OVERLAY_H_
#define UPP_CLIENTS_CPP_OVERLAY_H_

#include <array>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "imageio/labels.h"
#include "imageio/volume.h"

namespace upp::client {

// A label of the legend: its table entry and its volume.
struct OverlayLabel : imageio::LabelInfo {
  double volume_ml = 0;
};

struct OverlayOptions {
  bool ct_window = true;  // window 400 / level 40 HU; else percentiles
  int panel_height = 384;
  double alpha = 0.45;
};

// `image`: channel 0 is drawn; `labels`: one per voxel, same grid. Returns
// the PNG bytes. Slices go through the centre of the labelled voxels (the
// volume's centre when none is labelled).
absl::StatusOr<std::string> RenderOverlayPng(const imageio::Volume& image, const std::vector<uint16_t>& labels,
                                             const std::vector<OverlayLabel>& legend,
                                             const OverlayOptions& options = {});

}  // namespace upp::client

#endif  // UPP_CLIENTS_CPP_OVERLAY_H_
