#include "server/model_registry.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "imageio/file_util.h"
#include "model/safetensors.h"
#include "server/status.h"

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
  std::unique_ptr<ServedModel> m(new ServedModel(entry, batching, metrics, stitch_pool));
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
        const absl::Status s = FromModelStatus(runner.status());
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
  for (auto& r : m->runners_) m->workers_.emplace_back([mp = m.get(), rp = r.get()] { mp->WorkerLoop(rp); });
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

namespace {

// The logits buffers of one worker: it runs each batch into a free one, and
// the stitching task gives it back. Two let the worker run the next batch
// while the last one is stitched, and make it wait when stitching falls
// behind, so that what waits for the CPU pool stays bounded (one batch of
// logits per worker: batch x classes x patch floats).
class LogitsBuffers {
 public:
  explicit LogitsBuffers(int count) : free_(count) {}
  // Blocks until a buffer is free.
  std::vector<float> Take() {
    absl::MutexLock lock(&mu_, absl::Condition(this, &LogitsBuffers::AnyFreeLocked));
    std::vector<float> b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void Give(std::vector<float> b) {
    absl::MutexLock lock(&mu_);
    free_.push_back(std::move(b));
  }

 private:
  bool AnyFreeLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !free_.empty(); }
  absl::Mutex mu_;
  std::vector<std::vector<float>> free_ ABSL_GUARDED_BY(mu_);
};

// Hands each window's logits to its request (which stitches them).
void Stitch(const std::vector<WindowTask>& batch, const std::vector<float>& out, int64_t out_floats) {
  for (size_t i = 0; i < batch.size(); ++i) batch[i].source->WindowDone(batch[i].item, out.data() + i * out_floats);
}

}  // namespace

void ServedModel::WorkerLoop(model::WindowRunner* runner) {
  const auto& p = config_.patch;
  const int64_t in_floats = config_.in_channels * p[0] * p[1] * p[2];
  const int64_t out_floats = config_.num_classes * p[0] * p[1] * p[2];
  auto buffers = std::make_shared<LogitsBuffers>(stitch_pool_ ? 2 : 1);
  std::vector<float> in;
  for (;;) {
    std::vector<WindowTask> batch = batcher_.NextBatch();
    if (batch.empty()) return;  // shut down
    if (metrics_) metrics_->SetQueuedWindows(name(), batcher_.queued_windows());
    in.resize(batch.size() * in_floats);
    // A window that cannot be read fails its request only.
    std::vector<WindowTask> ok;
    for (auto& task : batch) {
      absl::Status s = task.source->ReadWindow(task.item, in.data() + ok.size() * in_floats);
      if (s.ok()) {
        ok.push_back(std::move(task));
      } else {
        task.source->WindowsFailed(s);
      }
    }
    if (ok.empty()) continue;
    std::vector<float> out = buffers->Take();
    out.resize(ok.size() * out_floats);
    if (!RunBatch(runner, ok, in, out)) {
      buffers->Give(std::move(out));
    } else if (!stitch_pool_) {
      Stitch(ok, out, out_floats);
      buffers->Give(std::move(out));
    } else {
      stitch_pool_->Schedule([ok = std::move(ok), out = std::move(out), buffers, out_floats]() mutable {
        // The buffer goes back whatever happens: a lost one would stop the
        // worker for good (the pool logs what escaped).
        try {
          Stitch(ok, out, out_floats);
        } catch (...) {
          buffers->Give(std::move(out));
          throw;
        }
        buffers->Give(std::move(out));
      });
    }
  }
}

bool ServedModel::RunBatch(model::WindowRunner* runner, const std::vector<WindowTask>& batch,
                           const std::vector<float>& in, std::vector<float>& out) {
  const auto start = std::chrono::steady_clock::now();
  const model::Status s = runner->Run(in.data(), static_cast<int64_t>(batch.size()), out.data());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (metrics_) metrics_->Batch(name(), static_cast<int>(batch.size()), seconds);
  if (s.ok()) return true;
  spdlog::error("model {}: batch of {} failed: {}", name(), batch.size(), s.ToString());
  for (auto& task : batch) task.source->WindowsFailed(absl::InternalError("inference failed"));
  return false;
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
