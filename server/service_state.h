// What the Segmentation service's calls share: configuration, models, the CPU
// pool, metrics, and admission control (requests and estimated bytes in
// flight, draining). Owned by Server; outlives every call (Server waits for
// in-flight calls before it is destroyed).
#ifndef UPP_SERVER_SERVICE_STATE_H_
#define UPP_SERVER_SERVICE_STATE_H_

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/device_budget.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/thread_pool.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

// A call with timeouts; the watchdog thread calls CheckTimeouts about four
// times a second while the call is alive (it holds only a weak reference).
class TimedCall {
 public:
  virtual ~TimedCall() = default;
  virtual void CheckTimeouts(absl::Time now) = 0;
};

class ServiceState {
 public:
  // `cpu_pool` is made before the models, whose workers stitch on it.
  ServiceState(unetrpp::v1::ServerConfig config, std::unique_ptr<ThreadPool> cpu_pool,
               std::unique_ptr<ModelRegistry> models, std::unique_ptr<Metrics> metrics,
               std::unique_ptr<Authenticator> auth, std::shared_ptr<spdlog::logger> audit);
  ~ServiceState();

  const unetrpp::v1::ServerConfig& config() const { return config_; }
  ModelRegistry& models() { return *models_; }
  Metrics& metrics() { return *metrics_; }
  ThreadPool& cpu_pool() { return *cpu_pool_; }
  const Authenticator& auth() const { return *auth_; }
  // One JSON line per call (no patient data): the audit trail.
  void Audit(const std::string& json_line) const;

  // A new request: UNAVAILABLE while draining, RESOURCE_EXHAUSTED past
  // max_concurrent_requests. On OK the caller must EndRequest() once.
  // `peer` is "principal:<name>" for an authenticated caller (at most
  // auth.max_requests_per_principal at once), else the client's address
  // without its port (at most limits.max_requests_per_peer).
  absl::Status BeginRequest(const std::string& peer, uint32_t* queue_position);
  void EndRequest(const std::string& peer);
  // Streams that have not yet sent their header (they hold no request slot
  // yet, but a reactor and buffers): RESOURCE_EXHAUSTED past
  // max_pending_streams, or past as many for `who` (as in BeginRequest) as
  // it may have requests. On OK the caller must EndPendingStream(who) once.
  absl::Status BeginPendingStream(const std::string& who);
  void EndPendingStream(const std::string& who);
  // Watches `call` until it is destroyed.
  void Watch(std::weak_ptr<TimedCall> call);
  // Reserves estimated working memory for a request of `who` (as in
  // BeginRequest); RESOURCE_EXHAUSTED (with a retry hint in the message)
  // past max_bytes_in_flight or auth.max_bytes_per_principal.
  // ReleaseBytes() gives back.
  absl::Status ReserveBytes(const std::string& who, int64_t bytes);
  void ReleaseBytes(const std::string& who, int64_t bytes);
  // Reserves estimated GPU memory for a job on `device` ("cuda:N"): false,
  // reserving nothing, when the device's jobs would then hold more than
  // limits.max_device_bytes_in_flight (the job then lives on the CPU, whose
  // memory ReserveBytes counted already). ReleaseDeviceBytes() gives back.
  bool ReserveDeviceBytes(const std::string& device, int64_t bytes);
  void ReleaseDeviceBytes(const std::string& device, int64_t bytes);
  // Windows of `who`'s requests queued or running: RESOURCE_EXHAUSTED past
  // auth.max_windows_per_principal. ReleaseWindows() gives back.
  absl::Status ReserveWindows(const std::string& who, int64_t windows);
  void ReleaseWindows(const std::string& who, int64_t windows);

  void StartDraining();
  bool draining() const { return draining_.load(); }
  int64_t in_flight() const;
  // Blocks until no request is in flight or `deadline`; true if none is.
  bool WaitIdle(absl::Time deadline);
  std::string NewRequestId();

 private:
  const unetrpp::v1::ServerConfig config_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ThreadPool> cpu_pool_;
  std::unique_ptr<Authenticator> auth_;
  std::shared_ptr<spdlog::logger> audit_;
  void WatchdogLoop();

  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{1};
  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // max_requests_per_principal for an authenticated caller ("principal:..."),
  // else max_requests_per_peer.
  uint32_t RequestsAllowed(const std::string& who) const;

  int64_t pending_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> per_peer_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> pending_per_peer_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> bytes_per_peer_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> windows_per_peer_ ABSL_GUARDED_BY(mu_);
  DeviceBudget device_budget_;

  absl::Mutex watch_mu_;
  std::vector<std::weak_ptr<TimedCall>> watched_ ABSL_GUARDED_BY(watch_mu_);
  bool stopping_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watchdog_;  // last: starts after everything it reads exists
};

}  // namespace upp::server

#endif  // UPP_SERVER_SERVICE_STATE_H_
