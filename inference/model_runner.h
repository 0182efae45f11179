// The inference job's BatchRunner over a model::WindowRunner, for programs
// that run the whole pipeline in one process (tools, tests; the server has
// its batcher instead). Header-only: its users link upp_model and
// upp_inference. model/ reports its own Status, converted by
// inference/model_status.h.
#ifndef UPP_INFERENCE_MODEL_RUNNER_H_
#define UPP_INFERENCE_MODEL_RUNNER_H_

#include <string>

#include "inference/job.h"
#include "inference/model_status.h"
#include "model/window_runner.h"

namespace upp::inference {

// `runner` must outlive the returned function.
inline BatchRunner RunnerFor(model::WindowRunner& runner) {
  return [&runner](const float* input, int64_t batch, float* logits) {
    return FromModelStatus(runner.Run(input, batch, logits));
  };
}

}  // namespace upp::inference

#endif  // UPP_INFERENCE_MODEL_RUNNER_H_
