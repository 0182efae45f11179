#include "server/model_registry.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "imageio/file_util.h"
#include "inference/model_status.h"
#include "proto/api.h"
#include "server/config_reload.h"
#include "server/model_worker.h"
#include "server/system_memory.h"

namespace upp::server {
namespace {

constexpr double kMiB = 1048576.0;

// SHA-256 of the file at `path` as lower-case hex ("" when it cannot be read).
std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 20);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
    EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<size_t>(in.gcount()));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

// The memory the weights of a version of `entry` take on each device: the
// file's size per instance (conservative for bf16 instances).
absl::StatusOr<std::map<std::string, int64_t>> WeightsMemory(const unetrpp::v1::ModelEntry& entry,
                                                             const std::string& weights) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(weights, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(weights, ": cannot be read (", ec.message(), ")"));
  std::map<std::string, int64_t> bytes;
  for (const auto& device : entry.devices())
    bytes[device.rfind("cuda", 0) == 0 ? device : "cpu"] +=
        static_cast<int64_t>(size) * static_cast<int64_t>(entry.instances_per_device());
  return bytes;
}

// Zero windows through a version's batcher, workers and stitch pool, so
// that their first allocations and kernel choices are made before any
// request arrives.
class WarmupSource final : public WindowSource {
 public:
  WarmupSource(int64_t in_floats, int64_t windows) : in_floats_(in_floats), windows_(windows) {}
  int priority() const override { return 0; }
  bool Alive() const override { return true; }
  bool warmup() const override { return true; }
  absl::Status ReadWindow(int64_t, float* dst) override {
    std::fill(dst, dst + in_floats_, 0.0f);
    return absl::OkStatus();
  }
  void WindowDone(int64_t, const float*) override {
    absl::MutexLock lock(&mu_);
    ++done_;
  }
  void WindowsFailed(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = status;
  }
  absl::Status Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &WarmupSource::FinishedLocked), timeout);
    if (!error_.ok()) return error_;
    if (done_ < windows_) return absl::DeadlineExceededError("warm-up windows did not finish in time");
    return absl::OkStatus();
  }

 private:
  bool FinishedLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ >= windows_ || !error_.ok(); }
  const int64_t in_floats_, windows_;
  absl::Mutex mu_;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

// ------------------------------------------------------------- ServedModel

absl::StatusOr<std::unique_ptr<ServedModel>> ServedModel::Load(const unetrpp::v1::ModelEntry& entry,
                                                               const unetrpp::v1::ServerConfig& config,
                                                               Metrics* metrics, ThreadPool* stitch_pool) {
  BatcherOptions batching;
  batching.max_batch_size = static_cast<int>(config.batching().max_batch_size());
  batching.max_queue_delay = absl::Microseconds(config.batching().max_queue_delay_us());
  batching.priority_aging = absl::Seconds(config.batching().priority_aging_seconds());
  if (config.batching().stitch_on_worker()) stitch_pool = nullptr;
  std::unique_ptr<ServedModel> m(new ServedModel(entry, batching));
  const std::string what = absl::StrCat("model \"", entry.name(), "\" version \"", entry.version(), "\": ");

  auto memory = WeightsMemory(entry, entry.weights());
  if (!memory.ok()) return absl::NotFoundError(what + std::string(memory.status().message()));
  m->memory_bytes_ = *std::move(memory);
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
  if (auto s = m->LoadPlan(first); !s.ok()) return absl::Status(s.code(), what + std::string(s.message()));
  m->weights_sha256_ = FileSha256(entry.weights());

  // One window per instance before the workers start: each instance's first
  // call allocates and picks kernels (WarmUp then runs the whole path).
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
  return m;
}

absl::Status ServedModel::LoadPlan(const model::WindowRunner& first) {
  std::string plan_json;
  if (!entry_.plan_file().empty()) {
    auto text = imageio::ReadWholeFile(entry_.plan_file(), int64_t{16} << 20);
    if (!text.ok()) return absl::NotFoundError("plan_file " + entry_.plan_file() + " cannot be read");
    plan_json = std::move(*text);
  }
  auto plan = preprocessing::PlanForNetwork(plan_json, first.metadata(), static_cast<int>(config_.num_classes),
                                            config_.patch, static_cast<int>(config_.in_channels));
  if (!plan.ok()) return absl::InvalidArgumentError(std::string(plan.status().message()));
  plan_ = *std::move(plan);
  // The fallback keeps a bare checkpoint servable, but its spacing,
  // intensity statistics and label names are generic: results are only as
  // right as the model's training matched them, so say so at every load.
  if (plan_json.empty() && first.metadata().count("unetrpp_plan") == 0)
    spdlog::warn(
        "model \"{}\": no plan (no --plan / plan_file, no \"unetrpp_plan\" in the weights' metadata): using generic CT "
        "settings ({} x {} x {} mm, CT statistics not of this model's training data, BTCV label names). Give the "
        "model's plan with --plan FILE or plan_file, or embed it with tools/convert_checkpoint.py --plan "
        "(docs/preprocessing.md, \"The plan file\"); build/tools/upp-plan --check checks one",
        entry_.name(), plan_.target_spacing[0], plan_.target_spacing[1], plan_.target_spacing[2]);
  return absl::OkStatus();
}

absl::Status ServedModel::WarmUp(int windows_per_worker) {
  const auto& p = config_.patch;
  const int64_t windows = std::max<int64_t>(1, windows_per_worker * static_cast<int64_t>(workers_.size()));
  auto source = std::make_shared<WarmupSource>(config_.in_channels * p[0] * p[1] * p[2], windows);
  batcher_.Enqueue(source, windows);
  return source->Wait(absl::Minutes(10));
}

ServedModel::~ServedModel() { Shutdown(); }

void ServedModel::Shutdown() {
  batcher_.Shutdown();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

void ServedModel::Pin() {
  absl::MutexLock lock(&pin_mu_);
  ++pins_;
}

void ServedModel::Unpin() {
  absl::MutexLock lock(&pin_mu_);
  --pins_;
}

bool ServedModel::WaitUnpinned() {
  absl::MutexLock lock(&pin_mu_, absl::Condition(this, &ServedModel::DoneWaitingLocked));
  return pins_ == 0;
}

void ServedModel::GiveUpWaiting() {
  absl::MutexLock lock(&pin_mu_);
  give_up_ = true;
}

bool ServedModel::DoneWaitingLocked() const { return pins_ == 0 || give_up_; }

ModelPin& ModelPin::operator=(ModelPin&& other) noexcept {
  if (this != &other) {
    Reset();
    model_ = std::exchange(other.model_, nullptr);
  }
  return *this;
}

void ModelPin::Reset() {
  if (model_) std::exchange(model_, nullptr)->Unpin();
}

// ------------------------------------------------------------ ModelRegistry

ModelRegistry::ModelRegistry(const unetrpp::v1::ServerConfig& config, Metrics* metrics, ThreadPool* stitch_pool,
                             Options options)
    : config_(config), metrics_(metrics), stitch_pool_(stitch_pool), options_(std::move(options)) {
  absl::MutexLock lock(&mu_);
  limits_ = config.limits();
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(const unetrpp::v1::ServerConfig& config,
                                                                   Metrics* metrics, ThreadPool* stitch_pool,
                                                                   Options options) {
  std::unique_ptr<ModelRegistry> r(new ModelRegistry(config, metrics, stitch_pool, std::move(options)));
  for (const auto& entry : config.models()) {
    auto scan = ScanVersions(entry);
    if (!scan.ok()) return scan.status();
    for (const std::string& skipped : scan->skipped) spdlog::warn("model \"{}\": skipped {}", entry.name(), skipped);
    {
      absl::MutexLock lock(&r->mu_);
      r->models_[entry.name()].entry = entry;
    }
    for (const VersionSpec& spec : scan->versions)
      if (auto s = r->LoadOne(entry, spec, /*make_default=*/true); !s.ok()) return s;
  }
  return r;
}

ModelRegistry::~ModelRegistry() { Shutdown(); }

absl::Status ModelRegistry::LoadOne(const unetrpp::v1::ModelEntry& entry, const VersionSpec& spec, bool make_default) {
  const auto start = std::chrono::steady_clock::now();
  const std::string& name = entry.name();
  {
    absl::MutexLock lock(&mu_);
    if (auto s = models_[name].lifecycle.BeginLoad(spec.version, absl::Now()); !s.ok())
      return absl::FailedPreconditionError(absl::StrCat("model \"", name, "\": ", s.message()));
  }
  const auto fail = [&](const absl::Status& why) {
    spdlog::error("model \"{}\" version \"{}\" not loaded ({}): {}", name, spec.version, spec.source,
                  std::string(why.message()));
    absl::MutexLock lock(&mu_);
    models_[name].lifecycle.Failed(spec.version, why, absl::Now()).IgnoreError();
    PublishLocked(name);
    return why;
  };
  auto m = ServedModel::Load(EntryForVersion(entry, spec), config_, metrics_, stitch_pool_);
  if (!m.ok()) return fail(m.status());
  {
    absl::MutexLock lock(&mu_);
    models_[name].lifecycle.Warming(spec.version, absl::Now()).IgnoreError();
  }
  if (auto s = (*m)->WarmUp(options_.warmup_windows_per_worker); !s.ok())
    return fail(absl::Status(
        s.code(), absl::StrCat("model \"", name, "\" version \"", spec.version, "\": warm-up failed: ", s.message())));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto& p = (*m)->config().patch;
  spdlog::info("model {} version {} loaded: {} instance(s), {}, patch {}x{}x{}, {} classes, sha256 {}, {:.2f} s", name,
               spec.version, entry.devices_size() * entry.instances_per_device(), entry.precision(), p[0], p[1], p[2],
               (*m)->config().num_classes, (*m)->weights_sha256().substr(0, 12), seconds);
  {
    absl::MutexLock lock(&mu_);
    Model& model = models_[name];
    model.lifecycle.Ready(spec.version, seconds, {(*m)->weights_sha256(), spec.card_json}, make_default, absl::Now())
        .IgnoreError();
    model.loaded[spec.version] = *std::move(m);
    PublishLocked(name);
  }
  if (metrics_) metrics_->ModelLoaded(name, seconds);
  return absl::OkStatus();
}

absl::StatusOr<ModelPin> ModelRegistry::Acquire(const std::string& name, const std::string& version) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return absl::NotFoundError(absl::StrCat("no model named \"", name, "\" (see ListModels)"));
  const Model& model = it->second;
  const std::string& v = version.empty() ? model.lifecycle.default_version() : version;
  if (v.empty())
    return proto::WithRetryAfter(
        absl::UnavailableError(absl::StrCat("model \"", name, "\" has no version serving (one is being loaded)")),
        absl::Seconds(5));
  if (auto found = model.loaded.find(v); found != model.loaded.end()) return ModelPin(found->second.get());
  const VersionRecord* r = model.lifecycle.Find(v);
  if (r && (r->state == VersionState::kLoading || r->state == VersionState::kWarming))
    return proto::WithRetryAfter(absl::UnavailableError(absl::StrCat("model \"", name, "\" version \"", v, "\" is ",
                                                                     VersionStateName(r->state), "; retry")),
                                 absl::Seconds(5));
  std::vector<std::string> ready;
  for (const auto& [loaded, m] : model.loaded) ready.push_back(loaded);
  return absl::NotFoundError(absl::StrCat("model \"", name, "\" has no version \"", v,
                                          "\" loaded (loaded: ", absl::StrJoin(ready, ", "), ")"));
}

std::vector<std::string> ModelRegistry::names() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::string> out;
  for (const auto& [name, m] : models_) out.push_back(name);
  return out;
}

ServedModel* ModelRegistry::Find(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return nullptr;
  auto found = it->second.loaded.find(it->second.lifecycle.default_version());
  return found == it->second.loaded.end() ? nullptr : found->second.get();
}

absl::StatusOr<ModelDescription> ModelRegistry::Describe(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return absl::NotFoundError(absl::StrCat("no model named \"", name, "\""));
  ModelDescription d;
  d.name = name;
  d.versions = it->second.lifecycle.versions();
  d.default_version = it->second.lifecycle.default_version();
  if (auto found = it->second.loaded.find(d.default_version); found != it->second.loaded.end())
    d.serving = ModelPin(found->second.get());
  return d;
}

absl::StatusOr<VersionSpec> ModelRegistry::Resolve(const LoadRequest& request) const {
  unetrpp::v1::ModelEntry entry;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = models_.find(request.name);
    if (it == models_.end())
      return absl::NotFoundError(absl::StrCat("no model named \"", request.name, "\" is configured"));
    entry = it->second.entry;
  }
  if (!request.version.empty()) {
    if (!ValidVersionName(request.version))
      return absl::InvalidArgumentError(absl::StrCat("version \"", request.version.substr(0, kMaxVersionLength),
                                                     request.version.size() > kMaxVersionLength ? "...\"" : "\"",
                                                     ": not a version name (", kVersionNameRule, ")"));
    entry.mutable_version_policy()->Clear();
    entry.mutable_version_policy()->add_specific(request.version);
  }
  auto scan = ScanVersions(entry);
  if (!scan.ok()) return scan.status();
  return scan->versions.back();
}

absl::Status ModelRegistry::CheckMemory(const unetrpp::v1::ModelEntry& entry, const VersionSpec& spec) const {
  auto need = WeightsMemory(entry, spec.weights);
  if (!need.ok()) return need.status();
  std::map<std::string, int64_t> have;
  unetrpp::v1::Limits limits;
  {
    absl::ReaderMutexLock lock(&mu_);
    limits = limits_;
    have = MemoryBytesLocked();
  }
  for (const auto& [device, bytes] : *need) {
    const bool host = device == "cpu";
    std::optional<int64_t> total;
    if (host) {
      total = options_.host_memory_bytes > 0 ? options_.host_memory_bytes : AvailableMemoryBytes();
    } else {
      total = options_.device_memory_bytes ? options_.device_memory_bytes(device)
                                           : (metrics_ ? metrics_->DeviceTotalBytes(device) : std::nullopt);
    }
    if (!total) continue;  // a device whose memory cannot be read: the load itself tells
    const int64_t budget =
        static_cast<int64_t>(host ? limits.max_bytes_in_flight() : limits.max_device_bytes_in_flight());
    if (have[device] + bytes + budget <= *total) continue;
    return absl::FailedPreconditionError(absl::StrFormat(
        "model \"%s\" version \"%s\" needs about %.0f MiB of %s memory beside the %.0f MiB of the versions loaded "
        "and the %.0f MiB admission budget (%s), more than the %.0f MiB there: unload a version first, or load "
        "with drain_then_load (the serving version stops first; requests are refused meanwhile)",
        entry.name(), spec.version, bytes / kMiB, device, have[device] / kMiB, budget / kMiB,
        host ? "limits.max_bytes_in_flight" : "limits.max_device_bytes_in_flight", *total / kMiB));
  }
  return absl::OkStatus();
}

std::map<std::string, int64_t> ModelRegistry::MemoryBytes() const {
  absl::ReaderMutexLock lock(&mu_);
  return MemoryBytesLocked();
}

std::map<std::string, int64_t> ModelRegistry::MemoryBytesLocked() const {
  std::map<std::string, int64_t> have;
  for (const auto& [name, model] : models_)
    for (const auto& [v, m] : model.loaded)
      for (const auto& [device, bytes] : m->memory_bytes()) have[device] += bytes;
  for (const auto& [m, memory] : retiring_)
    for (const auto& [device, bytes] : memory) have[device] += bytes;
  return have;
}

bool ModelRegistry::ShuttingDown() const {
  absl::MutexLock lock(&mu_);
  return shutdown_;
}

absl::Status ModelRegistry::LoadVersion(const LoadRequest& request) {
  absl::MutexLock manage(&manage_mu_);
  // Shutdown runs the management tasks still queued: a load that has not
  // begun must not hold up a SIGTERM for its loading and warm-up.
  if (ShuttingDown()) return absl::UnavailableError("the server is shutting down: no version is loaded");
  auto spec = Resolve(request);
  if (!spec.ok()) return spec.status();
  if (Unloading(request.name, spec->version)) WaitRetired();  // loaded again once the old copy is gone
  unetrpp::v1::ModelEntry entry;
  std::string previous;
  {
    absl::MutexLock lock(&mu_);
    Model& model = models_[request.name];
    entry = model.entry;
    previous = model.lifecycle.default_version();
    const VersionRecord* r = model.lifecycle.Find(spec->version);
    if (r && r->state == VersionState::kReady) {  // loaded already: a switch only
      if (auto s = model.lifecycle.MakeDefault(spec->version); !s.ok()) return s;
      PublishLocked(request.name);
      if (request.keep_previous || previous.empty() || previous == spec->version) return absl::OkStatus();
      return RetireLocked(model, previous);
    }
  }
  if (auto s = CheckMemory(entry, *spec); !s.ok()) {
    if (!request.drain_then_load) return s;
    spdlog::warn("model \"{}\": draining every version before loading \"{}\" (drain_then_load): {}", request.name,
                 spec->version, std::string(s.message()));
    {
      absl::MutexLock lock(&mu_);
      Model& model = models_[request.name];
      std::vector<std::string> ready;
      for (const auto& [v, m] : model.loaded) ready.push_back(v);
      for (const auto& v : ready) RetireLocked(model, v).IgnoreError();
    }
    WaitRetired();
    previous.clear();
  }
  if (auto s = LoadOne(entry, *spec, /*make_default=*/true); !s.ok()) return s;
  if (request.keep_previous || previous.empty() || previous == spec->version) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  Model& model = models_[request.name];
  if (model.loaded.count(previous) == 0) return absl::OkStatus();
  return RetireLocked(model, previous);
}

bool ModelRegistry::Unloading(const std::string& name, const std::string& version) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return false;
  const VersionRecord* r = it->second.lifecycle.Find(version);
  return r && r->state == VersionState::kUnloading;
}

absl::Status ModelRegistry::UnloadVersion(const std::string& name, const std::string& version) {
  absl::MutexLock manage(&manage_mu_);
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return absl::NotFoundError(absl::StrCat("no model named \"", name, "\""));
  if (it->second.loaded.count(version) == 0)
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", name, "\" has no ready version \"", version, "\" to unload"));
  return RetireLocked(it->second, version);
}

absl::Status ModelRegistry::RetireLocked(Model& model, const std::string& version) {
  if (auto s = model.lifecycle.BeginUnload(version, absl::Now()); !s.ok()) return s;
  std::unique_ptr<ServedModel> m = std::move(model.loaded.extract(version).mapped());
  retiring_[m.get()] = m->memory_bytes();
  waiting_.insert(m.get());
  if (shutdown_) m->GiveUpWaiting();
  spdlog::info("model {} version {}: unloading once its requests are done (default now: \"{}\")", m->name(), version,
               model.lifecycle.default_version());
  PublishLocked(m->name());
  retirers_.emplace_back([this, m = std::move(m)]() mutable { FinishRetiring(std::move(m)); });
  return absl::OkStatus();
}

void ModelRegistry::FinishRetiring(std::unique_ptr<ServedModel> m) {
  const bool unpinned = m->WaitUnpinned();
  {
    absl::MutexLock lock(&mu_);
    waiting_.erase(m.get());
  }
  m->Shutdown();  // its last windows are done: every request that pinned it has ended
  const ServedModel* const key = m.get();
  const std::string name = m->name(), version = m->version();
  if (unpinned) {
    m.reset();
    ReturnFreeMemory();
    spdlog::info("model {} version {} unloaded", name, version);
  }
  absl::MutexLock lock(&mu_);
  // Requests still hold it (cut short by Shutdown): freed with the registry.
  if (m) abandoned_.push_back(std::move(m));
  retiring_.erase(key);
  models_[name].lifecycle.Unloaded(version, absl::Now()).IgnoreError();
}

void ModelRegistry::PublishLocked(const std::string& name) {
  if (!metrics_) return;
  const ModelLifecycle& lifecycle = models_[name].lifecycle;
  for (const VersionRecord& r : lifecycle.versions())
    metrics_->ModelVersion(
        name, r.version,
        r.state == VersionState::kReady ? std::optional<bool>(r.version == lifecycle.default_version()) : std::nullopt);
}

void ModelRegistry::WaitRetired() {
  std::vector<std::thread> done;
  {
    absl::MutexLock lock(&mu_, absl::Condition(this, &ModelRegistry::NoneRetiringLocked));
    done.swap(retirers_);
  }
  for (auto& t : done) t.join();
}

void ModelRegistry::StartPolling(absl::Duration interval) {
  {
    absl::MutexLock lock(&mu_);
    poll_interval_ = interval;
  }
  poller_ = std::thread([this] {
    absl::MutexLock lock(&mu_);
    while (!mu_.AwaitWithTimeout(absl::Condition(&shutdown_), poll_interval_)) {
      mu_.Unlock();
      PollOnce();
      mu_.Lock();
    }
  });
}

void ModelRegistry::PollOnce() {
  std::vector<unetrpp::v1::ModelEntry> entries;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, model] : models_)
      if (!model.entry.repository().empty()) entries.push_back(model.entry);
  }
  for (const auto& entry : entries) PollModel(entry);
}

void ModelRegistry::Reconfigure(const unetrpp::v1::ServerConfig& config) {
  std::vector<std::pair<unetrpp::v1::ModelEntry, bool>> entries;  // and whether its source changed
  {
    absl::MutexLock lock(&mu_);
    limits_ = config.limits();  // live ones only: LiveConfig kept those fixed at start
    for (const auto& next : config.models()) {
      auto it = models_.find(next.name());
      if (it == models_.end()) continue;
      unetrpp::v1::ModelEntry& entry = it->second.entry;
      const std::string before = entry.SerializeAsString();
      CopyVersionSource(next, &entry);
      entries.emplace_back(entry, entry.SerializeAsString() != before);
    }
  }
  // Every model, changed or not: a version that failed is tried again (its
  // file may have been mended in place).
  for (const auto& [entry, changed] : entries) {
    if (ShuttingDown()) return;  // the rest is not loaded: a SIGTERM after a SIGHUP is not held up
    if (changed)
      spdlog::info("model \"{}\": configuration reloaded: following its version source and policy", entry.name());
    PollModel(entry, /*retry_failed=*/true);
    // A version's files are read when it loads: the same version name with
    // other files is not loaded again.
    auto scan = ScanVersions(entry);
    if (!scan.ok()) continue;
    absl::ReaderMutexLock lock(&mu_);
    const Model& model = models_.at(entry.name());
    for (const VersionSpec& spec : scan->versions)
      if (auto m = model.loaded.find(spec.version);
          m != model.loaded.end() && m->second->entry().weights() != spec.weights)
        spdlog::warn(
            "model \"{}\" version \"{}\" stays loaded from {}: the configuration now names {} for it; give the new "
            "weights a new version",
            entry.name(), spec.version, m->second->entry().weights(), spec.weights);
  }
}

void ModelRegistry::PollModel(const unetrpp::v1::ModelEntry& entry, bool retry_failed) {
  auto scan = ScanVersions(entry);
  if (!scan.ok()) {
    spdlog::warn("model \"{}\": repository poll: {}", entry.name(), std::string(scan.status().message()));
    return;
  }
  std::set<std::string> offered;
  for (const VersionSpec& spec : scan->versions) {
    if (ShuttingDown()) return;  // neither the rest loaded nor the stale ones unloaded
    offered.insert(spec.version);
    {
      absl::ReaderMutexLock lock(&mu_);
      const VersionRecord* r = models_.at(entry.name()).lifecycle.Find(spec.version);
      // Loaded, on its way, or failed (retried by LoadModel or a reload, not
      // by the poll).
      if (r && r->state != VersionState::kUnloaded && !(retry_failed && r->state == VersionState::kFailed)) continue;
    }
    spdlog::info("model \"{}\": {} found version \"{}\" ({})", entry.name(),
                 retry_failed ? "configuration reload" : "repository poll", spec.version, spec.source);
    LoadRequest load{entry.name(), spec.version, /*keep_previous=*/true, /*drain_then_load=*/false};
    LoadVersion(load).IgnoreError();  // LoadOne logged why; the next version and the next poll go on
  }
  // The versions no longer offered go only once every offered one serves:
  // a broken new version never takes the old one down with it.
  std::vector<std::string> stale;
  {
    absl::ReaderMutexLock lock(&mu_);
    const Model& model = models_.at(entry.name());
    for (const std::string& version : offered)
      if (!model.loaded.count(version)) return;
    for (const auto& [version, m] : model.loaded)
      if (!offered.count(version)) stale.push_back(version);
  }
  for (const std::string& version : stale) UnloadVersion(entry.name(), version).IgnoreError();
}

void ModelRegistry::RunManagement(std::function<void()> work) {
  {
    absl::MutexLock lock(&manager_mu_);
    if (manager_) return manager_->Schedule(std::move(work));
  }
  work();
}

void ModelRegistry::Shutdown() {
  std::vector<ServedModel*> serving;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    for (ServedModel* m : waiting_) m->GiveUpWaiting();
  }
  std::unique_ptr<ThreadPool> manager;
  {
    absl::MutexLock lock(&manager_mu_);
    manager = std::move(manager_);
  }
  manager.reset();  // a load in flight finishes (its workers still run) and answers its caller
  if (poller_.joinable()) poller_.join();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [name, model] : models_)
      for (auto& [v, m] : model.loaded) serving.push_back(m.get());
  }
  for (ServedModel* m : serving) m->Shutdown();
  WaitRetired();
}

}  // namespace upp::server
