// model::Network: the entry point to model/ for the rest of the project.
// Builds a validated UNETR++, loads weights, runs inference. Every LibTorch
// exception is caught here and returned as a Status.
//
// Ownership: a Network owns its module. Threading: Forward() may be called
// from one thread at a time per Network (make one Network per worker);
// LibTorch's intra-op thread pool parallelises each call.
#ifndef UPP_MODEL_NETWORK_H_
#define UPP_MODEL_NETWORK_H_

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/status.h"
#include "model/unetrpp.h"
#include "model/weights.h"

namespace upp::model {

enum class Precision {
  kFloat32,
  // Convolutions in bfloat16 (oneDNN AMX/AVX512-BF16 kernels on CPU, tensor
  // cores on GPU), everything else in float32; logits are float32.
  kBFloat16,
};

struct NetworkOptions {
  torch::Device device = torch::kCPU;
  Precision precision = Precision::kFloat32;
};

class Network {
 public:
  static StatusOr<std::unique_ptr<Network>> Create(const ModelConfig& config, const NetworkOptions& options = {});
  // Builds the network from the "unetrpp_config" metadata of a weights file
  // (or the fixture-style keys config/feature_size/depths/patch) and loads it.
  static StatusOr<std::unique_ptr<Network>> FromWeightsFile(const std::string& path, const LoadOptions& load = {},
                                                            const NetworkOptions& options = {});

  Status LoadWeights(const std::string& path, const LoadOptions& options = {}, LoadReport* report = nullptr);
  Status LoadWeights(const SafetensorsReader& reader, const LoadOptions& options = {}, LoadReport* report = nullptr);

  // input: (B, in_channels, patch D, H, W), any floating dtype, any device
  // (moved to the network's). Returns float32 logits (B, classes, D, H, W) on
  // the network's device; with deep_supervision also out2 and out3.
  StatusOr<std::vector<torch::Tensor>> Forward(const torch::Tensor& input, bool deep_supervision = false);

  const ModelConfig& config() const { return config_; }
  const NetworkOptions& options() const { return options_; }
  UnetrPP& module() { return module_; }

 private:
  Network(const ModelConfig& config, const NetworkOptions& options, UnetrPP module)
      : config_(config), options_(options), module_(std::move(module)) {}
  Status ApplyPrecisionAndDevice();
  torch::ScalarType ConvDtype() const;

  ModelConfig config_;
  NetworkOptions options_;
  UnetrPP module_;
  bool deep_supervision_loaded_ = true;
};

// The architecture described by a weights file's metadata.
StatusOr<ModelConfig> ConfigFromMetadata(const std::map<std::string, std::string>& metadata);

}  // namespace upp::model

#endif  // UPP_MODEL_NETWORK_H_
