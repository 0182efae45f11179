#include "server/service_state.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace upp::server {

ServiceState::ServiceState(unetrpp::v1::ServerConfig config, std::unique_ptr<ModelRegistry> models,
                           std::unique_ptr<Metrics> metrics)
    : config_(std::move(config)),
      models_(std::move(models)),
      metrics_(std::move(metrics)),
      cpu_pool_(std::make_unique<ThreadPool>(static_cast<int>(config_.cpu_threads()))) {}

ServiceState::~ServiceState() {
  models_->Shutdown();
  cpu_pool_.reset();  // runs what is queued, joins
}

absl::Status ServiceState::BeginRequest(uint32_t* queue_position) {
  if (draining_) return absl::UnavailableError("the server is shutting down; retry on another replica");
  absl::MutexLock lock(&mu_);
  if (in_flight_ >= config_.limits().max_concurrent_requests())
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many concurrent requests (", in_flight_, "); retry in a few seconds"));
  *queue_position = static_cast<uint32_t>(in_flight_);
  ++in_flight_;
  metrics_->AddInFlight(1);
  return absl::OkStatus();
}

void ServiceState::EndRequest() {
  absl::MutexLock lock(&mu_);
  --in_flight_;
  metrics_->AddInFlight(-1);
}

absl::Status ServiceState::ReserveBytes(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  const auto limit = static_cast<int64_t>(config_.limits().max_bytes_in_flight());
  if (bytes > limit)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "this volume needs about %.1f GiB of working memory, more than the server's limit of %.1f GiB",
        bytes / 1073741824.0, limit / 1073741824.0));
  if (bytes_in_flight_ + bytes > limit)
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the server is at its memory limit (%.1f of %.1f GiB in use); retry in 30 s",
        bytes_in_flight_ / 1073741824.0, limit / 1073741824.0));
  bytes_in_flight_ += bytes;
  metrics_->AddBytesInFlight(static_cast<double>(bytes));
  return absl::OkStatus();
}

void ServiceState::ReleaseBytes(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  bytes_in_flight_ -= bytes;
  metrics_->AddBytesInFlight(-static_cast<double>(bytes));
}

void ServiceState::StartDraining() { draining_ = true; }

int64_t ServiceState::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

bool ServiceState::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(
      absl::Condition(+[](int64_t* n) { return *n == 0; }, &in_flight_), deadline);
}

std::string ServiceState::NewRequestId() {
  // A counter plus a per-process random prefix: unique across replicas in
  // logs, and carries no information about the request.
  static const uint32_t prefix = std::random_device{}();
  return absl::StrFormat("%08x-%06d", prefix, next_id_++);
}

}  // namespace upp::server
