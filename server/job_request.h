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
#include "unetrpp/v1/segmentation.pb.h"

namespace upp::server {

// The step and mirroring the header asks for (unset: the plan's).
inference::JobOptions JobOptionsFromHeader(const unetrpp::v1::RequestHeader& header);

// The working memory to admit for a job over an input of geometry `g`, or
// RESOURCE_EXHAUSTED when its windows (an upper bound, counted without
// building anything) pass `max_windows` (limits.max_windows_per_request).
absl::StatusOr<int64_t> JobBytesToAdmit(const imageio::Geometry& g, const preprocessing::Plan& plan,
                                        const inference::JobOptions& options, int64_t max_windows);

}  // namespace upp::server

#endif  // UPP_SERVER_JOB_REQUEST_H_
