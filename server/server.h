// The unetrpp-serve server: loads the models, serves unetrpp.v1.Segmentation
// (callback API), grpc.health.v1 (overall, per service and per model) and
// server reflection, exposes /metrics, and drains on request.
//
// Ownership: Server owns the gRPC server, the service and ServiceState
// (models, pools, metrics). Threading: Create/Drain/Wait from the main (or a
// signal-handling) thread.
#ifndef UPP_SERVER_SERVER_H_
#define UPP_SERVER_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/metrics.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

class HealthService;
class ServiceState;
class SegmentationService;

class Server {
 public:
  // `config` after ApplyDefaults(); validated here. Health turns SERVING
  // once every model is loaded and warmed up.
  static absl::StatusOr<std::unique_ptr<Server>> Create(unetrpp::v1::ServerConfig config);
  ~Server();

  int port() const { return port_; }
  int metrics_port() const;
  // Totals of `model`'s network calls so far (batches, windows, seconds).
  Metrics::BatchTotals Batches(const std::string& model) const;

  // A re-read configuration file (SIGHUP; `read` is its reading, an error
  // when it could not be read or parsed). Valid: its live fields take effect
  // (config_reload.h; the models' versions load and unload on the
  // registry's management thread, after this returns), the fields that need
  // a restart are logged and returned. Invalid: nothing changes, the error
  // is logged and returned. Either way counted in upp_config_reloads_total.
  // From one thread at a time.
  absl::StatusOr<std::vector<std::string>> Reload(absl::StatusOr<unetrpp::v1::ServerConfig> read);
  // Blocks until the registry's management thread has done what was queued
  // before (a reload's loads; tests).
  void WaitManagement();

  // Health NOT_SERVING, new calls get UNAVAILABLE, in-flight calls get up to
  // `grace` to finish, then the server shuts down (cancelling what is left).
  void Drain(absl::Duration grace);
  void Wait();

  // Health service names: "" (overall), "unetrpp.v1.Segmentation", and
  // "unetrpp.v1.Segmentation/<model>" per model.
  static std::string ModelHealthName(const std::string& model);

 private:
  Server() = default;
  void SetServing(bool serving);

  // The configuration as read and defaulted, before what start-up derives
  // (device budgets): what a reload is compared with.
  unetrpp::v1::ServerConfig configured_;
  std::unique_ptr<ServiceState> state_;
  std::unique_ptr<SegmentationService> service_;
  std::unique_ptr<HealthService> health_;  // outlives server_: its reactors call it
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace upp::server

#endif  // UPP_SERVER_SERVER_H_
