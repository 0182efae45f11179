// What a request's header and its input's geometry make of a segmentation
// job, before the job exists: the job's options, and what admitting it costs
// (its windows against the per-request limit, its working memory). Plain
// functions of the header, the plan and the configuration, so the reactor
// only applies them and tests need no server (tests/server/job_request_test.cc).
#ifndef UPP_SERVER_JOB_REQUEST_H_
#define UPP_SERVER_JOB_REQUEST_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "imageio/geometry.h"
#include "inference/job.h"
#include "preprocessing/plan.h"
#include "unetrpp/v1/config.pb.h"
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

// The step and mirroring the header asks for (unset: the plan's).
inference::JobOptions JobOptionsFromHeader(const unetrpp::v1::RequestHeader& header);

// What a job may make of its input: limits.max_windows_per_request,
// max_spacing_mm and max_resampling_factor (defaults: server/config.cc).
struct JobLimits {
  int64_t max_windows = 0;           // windows x mirror variants
  double max_spacing_mm = 0;         // per axis
  double max_resampling_factor = 0;  // network-grid voxels per input voxel
  static JobLimits FromConfig(const unetrpp::v1::ServerConfig& config);
};

// INVALID_ARGUMENT, naming the spacing and the limit, when the input's
// voxels are implausibly large or resampling them to the plan's grid would
// multiply them past `limits.max_resampling_factor`.
absl::Status CheckResampling(const imageio::Geometry& g, const preprocessing::Plan& plan, const JobLimits& limits);

// The working memory to admit for a job over an input of geometry `g`: the
// resampling checked (CheckResampling), then RESOURCE_EXHAUSTED when its
// windows (an upper bound, counted without building anything) pass
// `limits.max_windows`.
absl::StatusOr<int64_t> JobBytesToAdmit(const imageio::Geometry& g, const preprocessing::Plan& plan,
                                        const inference::JobOptions& options, const JobLimits& limits);

}  // namespace upp::server

#endif  // UPP_SERVER_JOB_REQUEST_H_
