// NaN and infinite input voxels, before anything computes with them: a NIfTI
// may hold NaN (masked research images), and one NaN would spread through
// resampling, normalisation and every window it touches. Torch-free: the
// server includes it (it runs before the job exists, on the decoded volume).
#ifndef UPP_PREPROCESSING_NONFINITE_H_
#define UPP_PREPROCESSING_NONFINITE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "imageio/volume.h"

namespace upp::preprocessing {

enum class NonFinitePolicy {
  kReplace,  // by the channel's lowest finite value (0 when it has none)
  kRefuse,   // INVALID_ARGUMENT naming the count
};

// The voxels replaced (0 when all are finite), or the refusal.
absl::StatusOr<int64_t> HandleNonFinite(imageio::Volume& volume, NonFinitePolicy policy);

}  // namespace upp::preprocessing

#endif  // UPP_PREPROCESSING_NONFINITE_H_
