#include "model/network.h"

#include <nlohmann/json.hpp>

namespace upp::model {
namespace {

std::string ShapeOf(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

StatusOr<std::unique_ptr<Network>> Network::Create(const ModelConfig& config,
                                                   const NetworkOptions& options) {
  UPP_RETURN_IF_ERROR(config.Validate());
  try {
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

Status Network::ApplyPrecisionAndDevice() {
  try {
    // Module::to(device, dtype) would also convert integer buffers
    // (BatchNorm's num_batches_tracked); PyTorch converts floating tensors only.
    auto dtype = options_.precision == Precision::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
    torch::NoGradGuard no_grad;
    auto move = [&](torch::Tensor& t) {
      t.set_data(t.is_floating_point() ? t.to(options_.device, dtype) : t.to(options_.device));
    };
    for (auto& p : module_->parameters()) move(p);
    for (auto& b : module_->buffers()) move(b);
    module_->PrepareForInference();
    return OkStatus();
  } catch (const c10::Error& e) {
    return InvalidArgumentError(std::string("moving the network to ") + options_.device.str() +
                                ": " + e.what_without_backtrace());
  }
}

StatusOr<std::unique_ptr<Network>> Network::FromWeightsFile(const std::string& path,
                                                            const LoadOptions& load,
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

Status Network::LoadWeights(const std::string& path, const LoadOptions& options,
                            LoadReport* report) {
  auto reader = SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  return LoadWeights(**reader, options, report);
}

Status Network::LoadWeights(const SafetensorsReader& reader, const LoadOptions& options,
                            LoadReport* report) {
  UPP_RETURN_IF_ERROR(upp::model::LoadWeights(*module_, reader, options, report));
  deep_supervision_loaded_ = reader.Find("out2.conv.conv.weight") != nullptr;
  try {
    module_->PrepareForInference();
  } catch (const c10::Error& e) {
    return InternalError(std::string("preparing the network: ") + e.what_without_backtrace());
  }
  return OkStatus();
}

StatusOr<std::vector<torch::Tensor>> Network::Forward(const torch::Tensor& input,
                                                      bool deep_supervision) {
  const auto& p = config_.patch;
  if (!input.defined() || input.dim() != 5 || input.size(1) != config_.in_channels ||
      input.size(2) != p[0] || input.size(3) != p[1] || input.size(4) != p[2] ||
      input.size(0) < 1) {
    return InvalidArgumentError(
        "network input must be (B>=1, " + std::to_string(config_.in_channels) + ", " +
        std::to_string(p[0]) + ", " + std::to_string(p[1]) + ", " + std::to_string(p[2]) +
        "), got " + (input.defined() ? ShapeOf(input) : std::string("undefined")));
  }
  if (!input.is_floating_point()) return InvalidArgumentError("network input must be floating point");
  if (deep_supervision && !deep_supervision_loaded_) {
    return FailedPreconditionError("deep-supervision heads were not loaded from the weights");
  }
  try {
    c10::InferenceMode guard;
    auto dtype = options_.precision == Precision::kBFloat16 ? torch::kBFloat16 : torch::kFloat32;
    auto x = input.to(options_.device, dtype).contiguous();
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
