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
    : config_(std::move(config)),
      models_(std::move(models)),
      metrics_(std::move(metrics)),
      cpu_pool_(std::move(cpu_pool)),
      auth_(std::move(auth)),
      audit_(std::move(audit)),
      device_budget_(static_cast<int64_t>(
          std::min<uint64_t>(config_.limits().max_device_bytes_in_flight(), std::numeric_limits<int64_t>::max()))),
      watchdog_([this] { WatchdogLoop(); }) {}

ServiceState::~ServiceState() {
  {
    absl::MutexLock lock(&watch_mu_);
    stopping_ = true;
  }
  watchdog_.join();
  models_->Shutdown();  // the workers' last stitching tasks are queued on the pool
  cpu_pool_.reset();    // runs what is queued, joins
}

absl::Status ServiceState::BeginRequest(const std::string& peer, uint32_t* queue_position) {
  if (draining_) return absl::UnavailableError("the server is shutting down; retry on another replica");
  absl::MutexLock lock(&mu_);
  if (in_flight_ >= config_.limits().max_concurrent_requests())
    return proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat("too many concurrent requests (", in_flight_,
                                                                           "); retry in a few seconds")),
                                 absl::Seconds(5));
  // Authenticated callers are counted per principal, others per address.
  const bool principal = peer.rfind("principal:", 0) == 0;
  const uint32_t limit = RequestsAllowed(peer);
  int64_t& mine = per_peer_[peer];
  if (mine >= limit)
    return proto::WithRetryAfter(
        absl::ResourceExhaustedError(absl::StrCat(
            principal ? "this caller" : "this client address", " already has ", mine, " requests running (",
            principal ? "limits.per_caller.max_requests_per_principal" : "limits.per_caller.max_requests_per_peer",
            "); retry when one has finished")),
        absl::Seconds(10));
  ++mine;
  *queue_position = static_cast<uint32_t>(in_flight_);
  ++in_flight_;
  metrics_->AddInFlight(1);
  return absl::OkStatus();
}

void ServiceState::EndRequest(const std::string& peer) {
  bool idle = false;
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (auto it = per_peer_.find(peer); it != per_peer_.end() && --it->second <= 0) per_peer_.erase(it);
    metrics_->AddInFlight(-1);
    idle = in_flight_ == 0;
  }
  // Idle: hand the freed heap back, so that one large request does not keep
  // its peak resident (under load the heap is kept for speed).
  if (idle) ReturnFreeMemory();
}

uint32_t ServiceState::RequestsAllowed(const std::string& who) const {
  const bool principal = who.rfind("principal:", 0) == 0;
  const auto& per_caller = config_.limits().per_caller();
  return principal && per_caller.max_requests_per_principal() > 0 ? per_caller.max_requests_per_principal()
                                                                  : per_caller.max_requests_per_peer();
}

absl::Status ServiceState::BeginPendingStream(const std::string& who) {
  absl::MutexLock lock(&mu_);
  if (pending_streams_ >= config_.limits().max_pending_streams())
    return proto::WithRetryAfter(
        absl::ResourceExhaustedError(
            absl::StrCat("too many streams without a RequestHeader (", pending_streams_, "); send the header first")),
        absl::Seconds(5));
  // Per caller too, as requests are: one address must not hold every slot.
  int64_t& mine = pending_per_peer_[who];
  if (mine >= RequestsAllowed(who))
    return proto::WithRetryAfter(
        absl::ResourceExhaustedError(
            absl::StrCat("this caller already has ", mine, " streams without a RequestHeader; send the header first")),
        absl::Seconds(5));
  ++mine;
  ++pending_streams_;
  return absl::OkStatus();
}

void ServiceState::EndPendingStream(const std::string& who) {
  absl::MutexLock lock(&mu_);
  --pending_streams_;
  auto it = pending_per_peer_.find(who);
  if (it != pending_per_peer_.end() && --it->second <= 0) pending_per_peer_.erase(it);
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

absl::Status ServiceState::ReserveBytes(const std::string& who, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  const auto limit = static_cast<int64_t>(config_.limits().max_bytes_in_flight());
  if (bytes > limit)
    return absl::ResourceExhaustedError(
        absl::StrFormat("this volume needs about %.1f GiB of working memory, more than the server's limit of %.1f GiB",
                        bytes / 1073741824.0, limit / 1073741824.0));
  if (bytes_in_flight_ + bytes > limit)
    return proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrFormat(
                                     "the server is at its memory limit (%.1f of %.1f GiB in use); retry in 30 s",
                                     bytes_in_flight_ / 1073741824.0, limit / 1073741824.0)),
                                 absl::Seconds(30));
  const auto own_limit = static_cast<int64_t>(config_.limits().per_caller().max_bytes());
  const auto it = bytes_per_peer_.find(who);
  const int64_t own = it == bytes_per_peer_.end() ? 0 : it->second;
  if (own_limit > 0 && own + bytes > own_limit)
    return proto::WithRetryAfter(
        absl::ResourceExhaustedError(absl::StrFormat(
            "this request needs about %.2f GiB of working memory and your requests in flight hold %.2f GiB "
            "(your limit: %.2f GiB); retry when one has finished",
            bytes / 1073741824.0, own / 1073741824.0, own_limit / 1073741824.0)),
        absl::Seconds(10));
  bytes_per_peer_[who] = own + bytes;
  bytes_in_flight_ += bytes;
  metrics_->AddBytesInFlight(static_cast<double>(bytes));
  return absl::OkStatus();
}

void ServiceState::ReleaseBytes(const std::string& who, int64_t bytes) {
  absl::MutexLock lock(&mu_);
  bytes_in_flight_ -= bytes;
  if (auto it = bytes_per_peer_.find(who); it != bytes_per_peer_.end() && (it->second -= bytes) <= 0)
    bytes_per_peer_.erase(it);
  metrics_->AddBytesInFlight(-static_cast<double>(bytes));
}

bool ServiceState::ReserveDeviceBytes(const std::string& device, int64_t bytes) {
  if (!device_budget_.Reserve(device, bytes)) return false;
  metrics_->AddDeviceBytesInFlight(device, static_cast<double>(bytes));
  return true;
}

void ServiceState::ReleaseDeviceBytes(const std::string& device, int64_t bytes) {
  device_budget_.Release(device, bytes);
  metrics_->AddDeviceBytesInFlight(device, -static_cast<double>(bytes));
}

absl::Status ServiceState::ReserveWindows(const std::string& who, int64_t windows) {
  absl::MutexLock lock(&mu_);
  const auto limit = static_cast<int64_t>(config_.limits().per_caller().max_windows());
  const auto it = windows_per_peer_.find(who);
  const int64_t own = it == windows_per_peer_.end() ? 0 : it->second;
  if (limit > 0 && own + windows > limit)
    return proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat(
                                     "this request needs ", windows, " windows and your requests have ", own,
                                     " queued or running (your limit: ", limit, "); retry when one has finished")),
                                 absl::Seconds(10));
  windows_per_peer_[who] = own + windows;
  return absl::OkStatus();
}

void ServiceState::ReleaseWindows(const std::string& who, int64_t windows) {
  absl::MutexLock lock(&mu_);
  if (auto it = windows_per_peer_.find(who); it != windows_per_peer_.end() && (it->second -= windows) <= 0)
    windows_per_peer_.erase(it);
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

void ServiceState::StartDraining() { draining_ = true; }

int64_t ServiceState::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

bool ServiceState::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(absl::Condition(
                                   +[](int64_t* n) { return *n == 0; }, &in_flight_),
                               deadline);
}

std::string ServiceState::NewRequestId() {
  // A counter plus a per-process random prefix: unique across replicas in
  // logs, and carries no information about the request.
  static const uint32_t prefix = std::random_device{}();
  return absl::StrFormat("%08x-%06d", prefix, next_id_++);
}

}  // namespace upp::server
