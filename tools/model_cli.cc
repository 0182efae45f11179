#include "tools/model_cli.h"

#include <torch/torch.h>

#include "model/cpu_threads.h"
#include "model/device.h"
#include "model/safetensors.h"

namespace upp::tools {

void ModelFlags::Register(CLI::App& app) {
  app.add_option("--preset", preset, "synapse | acdc | lung | tumor (default: from the weights)");
  app.add_option("--patch", patch, "patch size D H W")->expected(3);
  app.add_option("--stem", stem, "stem kernel = stride D H W")->expected(3);
  app.add_option("--depths", depths, "encoder depths (4 numbers)")->expected(4);
  app.add_option("--feature-size", feature_size, "feature size f");
  app.add_option("--heads", heads, "attention heads");
  app.add_option("--classes", classes, "output classes");
  app.add_option("--in-channels", in_channels, "input channels");
  app.add_option("--device", device, "cpu, cuda, cuda:N");
  app.add_option("--precision", precision, "fp32 | bf16")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--threads", threads, "intra-op threads (0: LibTorch's default)");
}

model::StatusOr<model::ModelConfig> ModelFlags::Resolve(const std::string& weights_path) const {
  model::ModelConfig c;
  if (!preset.empty()) {
    auto p = model::Preset(preset);
    if (!p.ok()) return p.status();
    c = *p;
  } else if (!weights_path.empty()) {
    auto reader = model::SafetensorsReader::Open(weights_path);
    if (!reader.ok()) return reader.status();
    auto m = model::ConfigFromMetadata((*reader)->metadata());
    if (!m.ok()) return m.status();
    c = *m;
  } else {
    return model::InvalidArgumentError("name a --preset or give --weights with a config in its metadata");
  }
  if (!patch.empty()) std::copy(patch.begin(), patch.end(), c.patch.begin());
  if (!stem.empty()) std::copy(stem.begin(), stem.end(), c.stem.begin());
  if (!depths.empty()) std::copy(depths.begin(), depths.end(), c.depths.begin());
  if (feature_size) c.feature_size = *feature_size;
  if (heads) c.num_heads = *heads;
  if (classes) c.num_classes = *classes;
  if (in_channels) c.in_channels = *in_channels;
  UPP_RETURN_IF_ERROR(c.Validate());
  return c;
}

model::StatusOr<model::NetworkOptions> ModelFlags::Options() const {
  model::NetworkOptions o;
  const auto spec = model::ParseDevice(device);
  if (!spec) return model::InvalidArgumentError("bad --device '" + device + "' (cpu, cuda or cuda:N)");
  o.device = spec->cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(spec->index)) : torch::kCPU;
  o.precision = precision == "bf16" ? model::Precision::kBFloat16 : model::Precision::kFloat32;
  return o;
}

void ModelFlags::ApplyThreads() const { model::ConfigureCpuThreads(threads); }

}  // namespace upp::tools
