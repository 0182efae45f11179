// What the Segmentation service's calls share: configuration, models, the CPU
// pool, metrics, admission control (admission.h) and the watchdog that times
// calls out. Owned by Server; outlives every call (Server waits for
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
#include "server/admission.h"
#include "server/auth.h"
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

  // The configuration in force; a reload (Server::Reload) replaces it, so a
  // call takes one snapshot when it begins (SegmentCall::config_) and reads
  // its fields from that at every stage.
  std::shared_ptr<const unetrpp::v1::ServerConfig> config() const;
  // `config`'s live fields in force from now on (config_reload.h): the
  // snapshot and admission's limits.
  void SetConfig(unetrpp::v1::ServerConfig config);
  ModelRegistry& models() { return *models_; }
  Metrics& metrics() { return *metrics_; }
  ThreadPool& cpu_pool() { return *cpu_pool_; }
  // Decoding only (limits.decode_threads threads): a slow or hostile input
  // waits here for its turn, while the CPU pool stitches and finishes the
  // windows of everyone else.
  ThreadPool& decode_pool() { return *decode_pool_; }
  const Authenticator& auth() const { return *auth_; }
  // One JSON line per call (no patient data): the audit trail.
  void Audit(const std::string& json_line) const;

  // Requests, streams, memory and windows in flight (admission.h).
  Admission& admission() { return admission_; }
  // Watches `call` until it is destroyed.
  void Watch(std::weak_ptr<TimedCall> call);

  void StartDraining() { admission_.StartDraining(); }
  bool draining() const { return admission_.draining(); }
  int64_t in_flight() const { return admission_.in_flight(); }
  // Calls that have ended for their client while work for them (decoding,
  // stitching) still runs: they hold their admission until it stops, and
  // drain waits for them. `delta`: +1 when such a call ends, -1 when its work
  // has stopped.
  void AddOrphaned(int delta);
  int64_t orphaned() const { return orphaned_.load(); }
  // Blocks until no request is in flight or `deadline`; true if none is.
  bool WaitIdle(absl::Time deadline) { return admission_.WaitIdle(deadline); }
  std::string NewRequestId();

 private:
  mutable absl::Mutex config_mu_;
  std::shared_ptr<const unetrpp::v1::ServerConfig> config_ ABSL_GUARDED_BY(config_mu_);
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ThreadPool> cpu_pool_;
  std::unique_ptr<ThreadPool> decode_pool_;  // hands decoded volumes to cpu_pool_
  std::unique_ptr<Authenticator> auth_;
  std::shared_ptr<spdlog::logger> audit_;
  void WatchdogLoop();

  std::atomic<uint64_t> next_id_{1};
  std::atomic<int64_t> orphaned_{0};
  Admission admission_;

  absl::Mutex watch_mu_;
  std::vector<std::weak_ptr<TimedCall>> watched_ ABSL_GUARDED_BY(watch_mu_);
  bool stopping_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watchdog_;  // last: starts after everything it reads exists
};

}  // namespace upp::server

#endif  // UPP_SERVER_SERVICE_STATE_H_
