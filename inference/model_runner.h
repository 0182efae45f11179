// The inference job's BatchRunner over a model::WindowRunner, for programs
// that run the whole pipeline in one process (tools, tests; the server has
// its batcher instead). Header-only: its users link upp_model and
// upp_inference. model/ reports its own Status
// (absl's codes) because pip LibTorch builds lack Abseil; this converts it.
#ifndef UPP_INFERENCE_MODEL_RUNNER_H_
#define UPP_INFERENCE_MODEL_RUNNER_H_

#include <string>

#include "absl/status/status.h"
#include "inference/job.h"
#include "model/window_runner.h"

namespace upp::inference {

// `runner` must outlive the returned function.
inline BatchRunner RunnerFor(model::WindowRunner& runner) {
  return [&runner](const float* input, int64_t batch, float* logits) {
    const model::Status s = runner.Run(input, batch, logits);
    return s.ok() ? absl::OkStatus() : absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
  };
}

}  // namespace upp::inference

#endif  // UPP_INFERENCE_MODEL_RUNNER_H_
