// What the Segmentation service's calls share: configuration, models, the CPU
// pool, metrics, and admission control (requests and estimated bytes in
// flight, draining). Owned by Server; outlives every call (Server waits for
// in-flight calls before it is destroyed).
#ifndef UPP_SERVER_SERVICE_STATE_H_
#define UPP_SERVER_SERVICE_STATE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/thread_pool.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

class ServiceState {
 public:
  ServiceState(unetrpp::v1::ServerConfig config, std::unique_ptr<ModelRegistry> models,
               std::unique_ptr<Metrics> metrics);
  ~ServiceState();

  const unetrpp::v1::ServerConfig& config() const { return config_; }
  ModelRegistry& models() { return *models_; }
  Metrics& metrics() { return *metrics_; }
  ThreadPool& cpu_pool() { return *cpu_pool_; }

  // A new request: UNAVAILABLE while draining, RESOURCE_EXHAUSTED past
  // max_concurrent_requests. On OK the caller must EndRequest() once.
  absl::Status BeginRequest(uint32_t* queue_position);
  void EndRequest();
  // Reserves estimated working memory; RESOURCE_EXHAUSTED (with a retry
  // hint in the message) past max_bytes_in_flight. ReleaseBytes() gives back.
  absl::Status ReserveBytes(int64_t bytes);
  void ReleaseBytes(int64_t bytes);

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
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{1};
  mutable absl::Mutex mu_;
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace upp::server

#endif  // UPP_SERVER_SERVICE_STATE_H_
