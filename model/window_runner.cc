#include "model/window_runner.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <optional>

#include "model/device.h"
#include "model/network.h"
#include "model/safetensors.h"

namespace upp::model {
namespace {

StatusOr<NetworkOptions> ParseOptions(const RunnerOptions& o) {
  NetworkOptions n;
  const auto spec = ParseDevice(o.device);
  if (!spec) return InvalidArgumentError("device '" + o.device + "' is not cpu, cuda or cuda:N");
  n.device = spec->cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(spec->index)) : torch::kCPU;
  if (n.device.is_cuda() && !torch::cuda::is_available())
    return UnavailableError("device '" + o.device + "': this LibTorch or machine has no CUDA");
  if (o.precision == "fp32") {
    n.precision = Precision::kFloat32;
  } else if (o.precision == "bf16") {
    n.precision = Precision::kBFloat16;
  } else {
    return InvalidArgumentError("precision '" + o.precision + "' is not fp32 or bf16");
  }
  return n;
}

}  // namespace

struct WindowRunner::Impl {
  std::unique_ptr<Network> network;
  // On a GPU, each runner (= model instance) runs on its own stream from the
  // device's pool, so that instances on one device overlap. Device-generic
  // c10 API: no CUDA headers, so this builds against any LibTorch.
  std::optional<c10::Stream> stream;

  void PickStream() {
    const torch::Device device = network->options().device;
    if (device.is_cpu()) return;
    c10::impl::VirtualGuardImpl guard_impl(device.type());
    stream = guard_impl.getStreamFromGlobalPool(device);
  }
};

WindowRunner::WindowRunner(std::unique_ptr<Impl> impl, RunnerOptions options,
                           std::map<std::string, std::string> metadata)
    : impl_(std::move(impl)), options_(std::move(options)), metadata_(std::move(metadata)) {}
WindowRunner::~WindowRunner() = default;

StatusOr<std::unique_ptr<WindowRunner>> WindowRunner::FromWeightsFile(const std::string& path,
                                                                      const RunnerOptions& options,
                                                                      const ModelConfig* config) {
  auto net_options = ParseOptions(options);
  if (!net_options.ok()) return net_options.status();
  auto reader = SafetensorsReader::Open(path);
  if (!reader.ok()) return reader.status();
  ModelConfig c;
  if (config) {
    c = *config;
  } else {
    auto from_meta = ConfigFromMetadata((*reader)->metadata());
    if (!from_meta.ok()) return from_meta.status();
    c = *from_meta;
  }
  auto network = Network::Create(c, *net_options);
  if (!network.ok()) return network.status();
  LoadOptions load;
  load.ignore_deep_supervision = true;
  UPP_RETURN_IF_ERROR((*network)->LoadWeights(**reader, load));
  auto impl = std::make_unique<Impl>();
  impl->network = std::move(*network);
  impl->PickStream();
  return std::unique_ptr<WindowRunner>(new WindowRunner(std::move(impl), options, (*reader)->metadata()));
}

StatusOr<std::unique_ptr<WindowRunner>> WindowRunner::FromConfig(const ModelConfig& config,
                                                                 const RunnerOptions& options) {
  auto net_options = ParseOptions(options);
  if (!net_options.ok()) return net_options.status();
  auto network = Network::Create(config, *net_options);
  if (!network.ok()) return network.status();
  auto impl = std::make_unique<Impl>();
  impl->network = std::move(*network);
  impl->PickStream();
  return std::unique_ptr<WindowRunner>(new WindowRunner(std::move(impl), options, {}));
}

const ModelConfig& WindowRunner::config() const { return impl_->network->config(); }

Status WindowRunner::Run(const float* input, int64_t batch, float* logits) {
  const ModelConfig& c = config();
  if (batch < 1) return InvalidArgumentError("batch must be >= 1");
  try {
    torch::NoGradGuard no_grad;
    std::optional<c10::StreamGuard> on_stream;
    if (impl_->stream) on_stream.emplace(*impl_->stream);
    const torch::Tensor x = torch::from_blob(const_cast<float*>(input),
                                             {batch, c.in_channels, c.patch[0], c.patch[1], c.patch[2]}, torch::kFloat);
    auto out = impl_->network->Forward(x);
    if (!out.ok()) return out.status();
    torch::from_blob(logits, {batch, c.num_classes, c.patch[0], c.patch[1], c.patch[2]}, torch::kFloat)
        .copy_((*out)[0]);
  } catch (const std::exception& e) {
    return InternalError(std::string("window runner: ") + e.what());
  }
  return OkStatus();
}

}  // namespace upp::model
