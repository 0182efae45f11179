#include "server/service_state.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/api.h"
#include "server/logging.h"
#include "server/system_memory.h"

namespace upp::server {

ServiceState::ServiceState(unetrpp::v1::ServerConfig config, std::unique_ptr<ThreadPool> cpu_pool,
                           std::unique_ptr<ModelRegistry> models, std::unique_ptr<Metrics> metrics,
                           std::unique_ptr<Authenticator> auth, std::shared_ptr<spdlog::logger> audit)
    : config_(std::make_shared<const unetrpp::v1::ServerConfig>(std::move(config))),
      models_(std::move(models)),
      metrics_(std::move(metrics)),
      cpu_pool_(std::move(cpu_pool)),
      decode_pool_(std::make_unique<ThreadPool>(static_cast<int>(config_->limits().decode_threads()))),
      auth_(std::move(auth)),
      audit_(std::move(audit)),
      admission_(AdmissionLimits::FromConfig(*config_), metrics_.get()),
      watchdog_([this] { WatchdogLoop(); }) {}

ServiceState::~ServiceState() {
  {
    absl::MutexLock lock(&watch_mu_);
    stopping_ = true;
  }
  watchdog_.join();
  decode_pool_.reset();  // its last decodes hand their volumes to the CPU pool
  models_->Shutdown();   // the workers' last stitching tasks are queued on the pool
  cpu_pool_.reset();     // runs what is queued, joins
}

std::shared_ptr<const unetrpp::v1::ServerConfig> ServiceState::config() const {
  absl::MutexLock lock(&config_mu_);
  return config_;
}

void ServiceState::SetConfig(unetrpp::v1::ServerConfig config) {
  auto next = std::make_shared<const unetrpp::v1::ServerConfig>(std::move(config));
  admission_.SetLimits(AdmissionLimits::FromConfig(*next));
  absl::MutexLock lock(&config_mu_);
  config_ = std::move(next);
}

void ServiceState::Watch(std::weak_ptr<TimedCall> call) {
  absl::MutexLock lock(&watch_mu_);
  watched_.push_back(std::move(call));
}

void ServiceState::WatchdogLoop() {
  for (;;) {
    std::vector<std::shared_ptr<TimedCall>> live;
    {
      absl::MutexLock lock(&watch_mu_);
      watch_mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(250));
      if (stopping_) return;
      watched_.erase(std::remove_if(watched_.begin(), watched_.end(), [](const auto& w) { return w.expired(); }),
                     watched_.end());
      for (const auto& w : watched_)
        if (auto c = w.lock()) live.push_back(std::move(c));
    }
    const absl::Time now = absl::Now();
    for (auto& c : live) c->CheckTimeouts(now);
  }
}

void ServiceState::Audit(const std::string& json_line) const {
  if (audit_) {
    audit_->info("{}", json_line);
    return;
  }
  // In the main log, JSON mode keeps the record a JSON object (under
  // "audit": its "time" is not the log line's).
  nlohmann::ordered_json fields{{"message", "audit"}};
  auto record = nlohmann::ordered_json::parse(json_line, nullptr, /*allow_exceptions=*/false);
  fields["audit"] = record.is_discarded() ? nlohmann::ordered_json(json_line) : std::move(record);
  LogWithFields(spdlog::level::info, fields, "audit " + json_line);
}

void ServiceState::AddOrphaned(int delta) {
  orphaned_ += delta;
  metrics_->AddOrphaned(delta);
}

std::string ServiceState::NewRequestId() {
  // A counter plus a per-process random prefix: unique across replicas in
  // logs, and carries no information about the request.
  static const uint32_t prefix = std::random_device{}();
  return absl::StrFormat("%08x-%06d", prefix, next_id_++);
}

}  // namespace upp::server
