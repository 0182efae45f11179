#include "server/job_request.h"

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace upp::server {

inference::JobOptions JobOptionsFromHeader(const unetrpp::v1::RequestHeader& header) {
  inference::JobOptions options;
  if (header.step() > 0) options.step = header.step();
  if (header.mirror()) {
    options.mirror_axes = std::vector<int>{0, 1, 2};
  } else if (!header.mirror_axes().empty()) {
    options.mirror_axes = std::vector<int>(header.mirror_axes().begin(), header.mirror_axes().end());
  }
  return options;
}

JobLimits JobLimits::FromConfig(const unetrpp::v1::ServerConfig& config) {
  JobLimits limits;
  limits.max_windows = static_cast<int64_t>(config.limits().max_windows_per_request());
  limits.max_spacing_mm = config.limits().max_spacing_mm();
  limits.max_resampling_factor = config.limits().max_resampling_factor();
  return limits;
}

absl::Status CheckResampling(const imageio::Geometry& g, const preprocessing::Plan& plan, const JobLimits& limits) {
  const auto& s = g.spacing;
  const std::string spacing = absl::StrFormat("%g x %g x %g mm", s[0], s[1], s[2]);
  for (double mm : s)
    if (mm > limits.max_spacing_mm)
      return absl::InvalidArgumentError(
          absl::StrCat("the input's voxel spacing (", spacing,
                       ") is implausible for a medical image (limits.max_spacing_mm: ", limits.max_spacing_mm, ")"));
  // Voxels made of each input voxel: the ratio of voxel volumes, whichever
  // axis ends up where (a product does not depend on the order).
  const auto& t = plan.target_spacing;
  const double factor = (s[0] * s[1] * s[2]) / (t[0] * t[1] * t[2]);
  if (factor > limits.max_resampling_factor)
    return absl::InvalidArgumentError(absl::StrFormat(
        "resampling this input (voxels of %s) to the model's %g x %g x %g mm grid would make %.0f voxels of each "
        "input voxel, more than limits.max_resampling_factor (%g)",
        spacing, t[0], t[1], t[2], factor, limits.max_resampling_factor));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> JobBytesToAdmit(const imageio::Geometry& g, const preprocessing::Plan& plan,
                                        const inference::JobOptions& options, const JobLimits& limits) {
  if (auto s = CheckResampling(g, plan, limits); !s.ok()) return s;
  const int64_t max_windows = limits.max_windows;
  const int64_t items = inference::SegmentationJob::CountItems(g, plan, options);
  if (items > max_windows)
    return absl::ResourceExhaustedError(absl::StrCat(
        "this volume needs ",
        items == std::numeric_limits<int64_t>::max() ? std::string("too many") : absl::StrCat(items),
        " windows, more than the server's limit of ", max_windows, " per request (limits.max_windows_per_request)"));
  return inference::SegmentationJob::EstimateBytes(g, plan.input_channels(), plan, options);
}

}  // namespace upp::server
