// WindowRunner: the torch-free face of model::Network for the rest of the
// project. It runs batches of windows given as plain float buffers, so the
// server and the pipeline never include <torch/torch.h> (each translation
// unit that does costs ~15 s and 1 GiB to compile).
//
// Ownership: owns its Network. Threading: Run() from one thread at a time per
// runner (a worker owns its runner); LibTorch's intra-op pool parallelises
// inside. The copies in and out cost ~1 ms per window against ~1 s of
// inference on a CPU.
#ifndef UPP_MODEL_WINDOW_RUNNER_H_
#define UPP_MODEL_WINDOW_RUNNER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "model/config.h"
#include "model/status.h"

namespace upp::model {

struct RunnerOptions {
  std::string device = "cpu";      // "cpu", "cuda", "cuda:N"
  std::string precision = "fp32";  // "fp32" or "bf16"
};

class WindowRunner {
 public:
  // Weights from a safetensors file; the architecture from its metadata
  // unless `config` is given. Deep-supervision heads in the file are ignored.
  static StatusOr<std::unique_ptr<WindowRunner>> FromWeightsFile(const std::string& path,
                                                                 const RunnerOptions& options = {},
                                                                 const ModelConfig* config = nullptr);
  // Randomly initialised (benchmarks and tests).
  static StatusOr<std::unique_ptr<WindowRunner>> FromConfig(const ModelConfig& config,
                                                            const RunnerOptions& options = {});
  ~WindowRunner();

  // input: batch x in_channels x patch floats; logits: batch x classes x patch.
  Status Run(const float* input, int64_t batch, float* logits);

  const ModelConfig& config() const;
  // The weights file's __metadata__ (empty for FromConfig).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& device() const { return options_.device; }

 private:
  struct Impl;
  WindowRunner(std::unique_ptr<Impl> impl, RunnerOptions options, std::map<std::string, std::string> metadata);
  std::unique_ptr<Impl> impl_;
  RunnerOptions options_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace upp::model

#endif  // UPP_MODEL_WINDOW_RUNNER_H_
