#include "model/network.h"

#include <nlohmann/json.hpp>

#include "model/cpu_features.h"

namespace upp::model {
namespace {

std::string ShapeOf(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

StatusOr<std::unique_ptr<Network>> Network::Create(const ModelConfig& config, const NetworkOptions& options) {
  UPP_RETURN_IF_ERROR(config.Validate());
  if (options.precision == Precision::kBFloat16 && options.device.is_cpu())
    UPP_RETURN_IF_ERROR(CheckPrecisionSupported("cpu", "bf16"));
  try {
    if (options.device.is_cuda() && options.precision == Precision::kFloat32) {
      // LibTorch lets cuDNN and cuBLAS round float32 to TF32 by default, which
      // moves logits by ~1e-3; float32 here means float32. (Process-wide.)
      at::globalContext().setAllowTF32CuDNN(false);
      at::globalContext().setAllowTF32CuBLAS(false);
    }
    UnetrPP module(config);
    module->eval();
    std::unique_ptr<Network> net(new Network(config, options, std::move(module)));
    UPP_RETURN_IF_ERROR(net->ApplyPrecisionAndDevice());
    return net;
  } catch (const c10::Error& e) {
    return InternalError(std::string("building the network: ") + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory building the network");
  }
}

torch::ScalarType Network::ConvDtype() const {
  return options_.precision == Precision::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
}

Status Network::ApplyPrecisionAndDevice() {
  try {
    // Weights stay float32; with bfloat16 precision the convolutions (98 % of
    // the multiply-adds) run in bfloat16 on converted copies, while norms,
    // softmaxes and attention stay in float32, as autocast would do it.
    torch::NoGradGuard no_grad;
    for (auto& p : module_->parameters()) p.set_data(p.to(options_.device));
    for (auto& b : module_->buffers()) b.set_data(b.to(options_.device));
    module_->PrepareForInference(ConvDtype());
    return OkStatus();
  } catch (const c10::Error& e) {
    return InvalidArgumentError(std::string("moving the network to ") + options_.device.str() + ": " +
                                e.what_without_backtrace());
  }
}

StatusOr<std::unique_ptr<Network>> Network::FromWeightsFile(const std::string& path, const LoadOptions& load,
                                                            const NetworkOptions& options) {
  auto reader = SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  auto config = ConfigFromMetadata((*reader)->metadata());
  if (!config.ok()) return Status(config.status().code(), "'" + path + "': " + config.status().message());
  auto net = Create(*config, options);
  if (!net.ok()) return net.status();
  UPP_RETURN_IF_ERROR((*net)->LoadWeights(**reader, load));
  return net;
}

Status Network::LoadWeights(const std::string& path, const LoadOptions& options, LoadReport* report) {
  auto reader = SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  return LoadWeights(**reader, options, report);
}

Status Network::LoadWeights(const SafetensorsReader& reader, const LoadOptions& options, LoadReport* report) {
  UPP_RETURN_IF_ERROR(upp::model::LoadWeights(*module_, reader, options, report));
  deep_supervision_loaded_ = reader.Find("out2.conv.conv.weight") != nullptr;
  try {
    module_->PrepareForInference(ConvDtype());
  } catch (const c10::Error& e) {
    return InternalError(std::string("preparing the network: ") + e.what_without_backtrace());
  }
  return OkStatus();
}

StatusOr<std::vector<torch::Tensor>> Network::Forward(const torch::Tensor& input, bool deep_supervision) {
  const auto& p = config_.patch;
  if (!input.defined() || input.dim() != 5 || input.size(1) != config_.in_channels || input.size(2) != p[0] ||
      input.size(3) != p[1] || input.size(4) != p[2] || input.size(0) < 1) {
    return InvalidArgumentError("network input must be (B>=1, " + std::to_string(config_.in_channels) + ", " +
                                std::to_string(p[0]) + ", " + std::to_string(p[1]) + ", " + std::to_string(p[2]) +
                                "), got " + (input.defined() ? ShapeOf(input) : std::string("undefined")));
  }
  if (!input.is_floating_point()) return InvalidArgumentError("network input must be floating point");
  if (deep_supervision && !deep_supervision_loaded_) {
    return FailedPreconditionError("deep-supervision heads were not loaded from the weights");
  }
  try {
    c10::InferenceMode guard;
    auto x = input.to(options_.device, torch::kFloat32).contiguous();
    auto outs = module_->forward(x, deep_supervision);
    for (auto& o : outs) o = o.to(torch::kFloat32);
    return outs;
  } catch (const c10::Error& e) {
    return InternalError(std::string("forward pass: ") + e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory in the forward pass");
  }
}

StatusOr<ModelConfig> ConfigFromMetadata(const std::map<std::string, std::string>& metadata) {
  if (auto it = metadata.find("unetrpp_config"); it != metadata.end()) {
    return ModelConfig::FromJson(it->second);
  }
  // The reference fixtures' metadata: config (preset name), feature_size,
  // depths and patch, each a JSON text.
  auto preset_it = metadata.find("config");
  if (preset_it == metadata.end()) {
    return InvalidArgumentError("no model configuration in the metadata (expected 'unetrpp_config')");
  }
  nlohmann::json j;
  j["preset"] = preset_it->second;
  for (const char* key : {"feature_size", "depths", "patch"}) {
    auto it = metadata.find(key);
    if (it == metadata.end()) continue;
    auto v = nlohmann::json::parse(it->second, nullptr, false);
    if (v.is_discarded()) return InvalidArgumentError(std::string("metadata '") + key + "' is not JSON");
    j[key] = v;
  }
  return ModelConfig::FromJson(j.dump());
}

}  // namespace upp::model
