// grpc.health.v1.Health, served by us rather than by gRPC's default service
// so that Watch streams are bounded per client address: a Watch never ends
// by itself and keeps its connection from going idle
// (transport.max_connection_idle_seconds), so without a bound one address
// could hold any number of connections open. Check answers every caller;
// neither method needs a credential (the kubelet's probes call them).
//
// Names: "" (overall) and whatever SetServing registered; an unknown name is
// NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, as the protocol says.
//
// Threading: SetServing and Shutdown from any thread; the reactors'
// reactions come from gRPC's threads. A watch's writes are started outside
// every lock (gRPC may run a reaction inline).
#ifndef UPP_SERVER_HEALTH_SERVICE_H_
#define UPP_SERVER_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace upp::server {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // At most `max_watches_per_peer` Watch streams open at once per client
  // address (ClientAddress); more are RESOURCE_EXHAUSTED.
  explicit HealthService(uint32_t max_watches_per_peer);
  ~HealthService() override;

  // Registers `service` (if new) and tells its watchers.
  void SetServing(const std::string& service, bool serving);
  // Ends every Watch (UNAVAILABLE) and refuses new ones: the server stops.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context, const grpc::health::v1::HealthCheckRequest* request) override;

 private:
  class Watcher;
  ServingStatus StatusLocked(const std::string& service) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Watcher* watcher, const std::string& peer);

  const uint32_t max_watches_per_peer_;
  mutable absl::Mutex mu_;
  std::map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint32_t> watches_per_peer_ ABSL_GUARDED_BY(mu_);
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar all_done_;  // watchers_ empty (the destructor waits for it)
};

}  // namespace upp::server

#endif  // UPP_SERVER_HEALTH_SERVICE_H_
