#include "server/job_request.h"

#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

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

absl::StatusOr<int64_t> JobBytesToAdmit(const imageio::Geometry& g, const preprocessing::Plan& plan,
                                        const inference::JobOptions& options, int64_t max_windows) {
  const int64_t items = inference::SegmentationJob::CountItems(g, plan, options);
  if (items > max_windows)
    return absl::ResourceExhaustedError(absl::StrCat(
        "this volume needs ",
        items == std::numeric_limits<int64_t>::max() ? std::string("too many") : absl::StrCat(items),
        " windows, more than the server's limit of ", max_windows, " per request (limits.max_windows_per_request)"));
  return inference::SegmentationJob::EstimateBytes(g, plan.input_channels(), plan, options);
}

}  // namespace upp::server
