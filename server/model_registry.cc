#include "server/model_registry.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "imageio/file_util.h"
#include "inference/model_status.h"
#include "model/safetensors.h"
#include "server/model_worker.h"

namespace upp::server {

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const unetrpp::v1::ModelEntry& entry,
                                                               const unetrpp::v1::ServerConfig& config,
                                                               Metrics* metrics, ThreadPool* stitch_pool) {
  const auto start = std::chrono::steady_clock::now();
  BatcherOptions batching;
  batching.max_batch_size = static_cast<int>(config.batching().max_batch_size());
  batching.max_queue_delay = absl::Microseconds(config.batching().max_queue_delay_us());
  batching.priority_aging = absl::Seconds(config.batching().priority_aging_seconds());
  if (config.batching().stitch_on_worker()) stitch_pool = nullptr;
  std::unique_ptr<ServedModel> m(new ServedModel(entry, batching));
  const std::string what = absl::StrCat("model \"", entry.name(), "\": ");

  std::optional<model::ModelConfig> preset;
  if (!entry.preset().empty()) {
    auto p = model::Preset(entry.preset());
    if (!p.ok()) return absl::InvalidArgumentError(what + p.status().message());
    preset = *p;
  }
  for (const std::string& device : entry.devices()) {
    for (uint32_t i = 0; i < entry.instances_per_device(); ++i) {
      auto runner = model::WindowRunner::FromWeightsFile(entry.weights(), {device, entry.precision()},
                                                         preset ? &*preset : nullptr);
      if (!runner.ok()) {
        const absl::Status s = inference::FromModelStatus(runner.status());
        return absl::Status(s.code(), what + std::string(s.message()));
      }
      m->runners_.push_back(std::move(*runner));
    }
  }
  const model::WindowRunner& first = *m->runners_.front();
  m->config_ = first.config();

  std::string plan_json;
  if (!entry.plan_file().empty()) {
    auto text = imageio::ReadWholeFile(entry.plan_file(), int64_t{16} << 20);
    if (!text.ok()) return absl::NotFoundError(what + "plan_file cannot be read");
    plan_json = std::move(*text);
  }
  auto plan = preprocessing::PlanForNetwork(plan_json, first.metadata(), static_cast<int>(m->config_.num_classes),
                                            m->config_.patch, static_cast<int>(m->config_.in_channels));
  if (!plan.ok()) return absl::InvalidArgumentError(what + std::string(plan.status().message()));
  m->plan_ = *std::move(plan);
  // The fallback keeps a bare checkpoint servable, but its spacing,
  // intensity statistics and label names are generic: results are only as
  // right as the model's training matched them, so say so at every start.
  if (plan_json.empty() && first.metadata().count("unetrpp_plan") == 0)
    spdlog::warn(
        "model \"{}\": no plan (no --plan / plan_file, no \"unetrpp_plan\" in the weights' metadata): using generic CT "
        "settings ({} x {} x {} mm, CT statistics not of this model's training data, BTCV label names). Give the "
        "model's plan with --plan FILE or plan_file, or embed it with tools/convert_checkpoint.py --plan "
        "(docs/preprocessing.md, \"The plan file\"); build/tools/upp-plan --check checks one",
        entry.name(), m->plan_.target_spacing[0], m->plan_.target_spacing[1], m->plan_.target_spacing[2]);

  // Warm-up: one window per instance (first calls allocate and pick kernels).
  const auto& p = m->config_.patch;
  const int64_t n = p[0] * p[1] * p[2];
  std::vector<float> in(m->config_.in_channels * n, 0.0f), out(m->config_.num_classes * n);
  for (auto& r : m->runners_) {
    auto s = r->Run(in.data(), 1, out.data());
    if (!s.ok()) return absl::InternalError(what + "warm-up failed: " + s.message());
  }
  for (auto& r : m->runners_) {
    ModelWorker worker(entry.name(), m->config_, r.get(), &m->batcher_, metrics, stitch_pool);
    m->workers_.emplace_back([worker = std::move(worker)]() mutable { worker.Run(); });
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (metrics) metrics->ModelLoaded(entry.name(), seconds);
  spdlog::info("model {} loaded: {} instance(s), {}, patch {}x{}x{}, {} classes, {:.2f} s", entry.name(),
               m->runners_.size(), entry.precision(), p[0], p[1], p[2], m->config_.num_classes, seconds);
  return m;
}

ServedModel::~ServedModel() { Shutdown(); }

void ServedModel::Shutdown() {
  batcher_.Shutdown();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(const unetrpp::v1::ServerConfig& config,
                                                                   Metrics* metrics, ThreadPool* stitch_pool) {
  std::unique_ptr<ModelRegistry> r(new ModelRegistry());
  for (const auto& entry : config.models()) {
    auto m = ServedModel::Load(entry, config, metrics, stitch_pool);
    if (!m.ok()) return m.status();
    r->models_[entry.name()] = std::move(*m);
  }
  return r;
}

ServedModel* ModelRegistry::Find(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

void ModelRegistry::Shutdown() {
  for (auto& [name, m] : models_) m->Shutdown();
}

}  // namespace upp::server
