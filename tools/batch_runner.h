// The pipeline's BatchRunner over a model::WindowRunner, for programs that run
// the pipeline in one process (tools, tests). model/ reports its own Status
// (absl's codes) because pip LibTorch builds lack Abseil; this converts it.
#ifndef UPP_TOOLS_BATCH_RUNNER_H_
#define UPP_TOOLS_BATCH_RUNNER_H_

#include <string>

#include "absl/status/status.h"
#include "inference/job.h"
#include "model/window_runner.h"

namespace upp::tools {

// `runner` must outlive the returned function.
inline inference::BatchRunner RunnerFor(model::WindowRunner& runner) {
  return [&runner](const float* input, int64_t batch, float* logits) {
    const model::Status s = runner.Run(input, batch, logits);
    return s.ok() ? absl::OkStatus() : absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
  };
}

}  // namespace upp::tools

#endif  // UPP_TOOLS_BATCH_RUNNER_H_
