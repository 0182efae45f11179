#include "server/health_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/auth.h"

namespace upp::server {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

// A Watch refused before it starts: finished at once.
class Refused final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  explicit Refused(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

// One Watch stream: the newest status is written, one write in flight;
// a status that changes while a write is in flight is written after it.
class HealthService::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthService* service, std::string name, std::string peer)
      : service_(service), name_(std::move(name)), peer_(std::move(peer)) {}

  const std::string& name() const { return name_; }

  void Send(ServingStatus status) {
    {
      absl::MutexLock lock(&mu_);
      latest_ = status;
      if (writing_ || finishing_) return;
      writing_ = true;
      response_.set_status(status);
    }
    StartWrite(&response_);
  }

  void End(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      finishing_ = true;
      end_ = status;
      if (writing_) return;  // OnWriteDone finishes
    }
    Finish(status);
  }

  void OnWriteDone(bool ok) override {
    grpc::Status end;
    bool write = false, finish = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok && !finishing_) {
        finishing_ = true;
        end_ = grpc::Status(grpc::StatusCode::CANCELLED, "the watch stream broke");
      }
      // End() left the finish to this write's end.
      finish = finishing_;
      if (!finishing_ && latest_ != response_.status()) {
        writing_ = write = true;
        response_.set_status(latest_);
      }
      end = end_;
    }
    if (finish) Finish(end);
    if (write) StartWrite(&response_);
  }

  void OnCancel() override { End(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }

  void OnDone() override {
    service_->Forget(this, peer_);
    delete this;
  }

 private:
  HealthService* const service_;
  const std::string name_;
  const std::string peer_;
  absl::Mutex mu_;
  ServingStatus latest_ ABSL_GUARDED_BY(mu_) = HealthCheckResponse::UNKNOWN;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status end_ ABSL_GUARDED_BY(mu_);
  HealthCheckResponse response_;  // the write in flight's; touched only by the writer
};

HealthService::HealthService(uint32_t max_watches_per_peer) : max_watches_per_peer_(max_watches_per_peer) {
  absl::MutexLock lock(&mu_);
  serving_[""] = false;
}

HealthService::~HealthService() {
  Shutdown();
  absl::MutexLock lock(&mu_);
  // The gRPC server has stopped before this: every watcher's OnDone has run
  // or is about to.
  while (!watchers_.empty()) all_done_.WaitWithTimeout(&mu_, absl::Seconds(5));
}

HealthService::ServingStatus HealthService::StatusLocked(const std::string& service) const {
  const auto it = serving_.find(service);
  if (it == serving_.end()) return HealthCheckResponse::SERVICE_UNKNOWN;
  return it->second ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(const std::string& service, bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  serving_[service] = serving;
  // Under mu_: a watcher is deleted only after Forget took it out.
  for (Watcher* w : watchers_)
    if (w->name() == service) w->Send(StatusLocked(service));
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  for (Watcher* w : watchers_) w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping"));
}

void HealthService::Forget(Watcher* watcher, const std::string& peer) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(watcher);
  if (const auto it = watches_per_peer_.find(peer); it != watches_per_peer_.end() && --it->second == 0)
    watches_per_peer_.erase(it);
  if (watchers_.empty()) all_done_.SignalAll();
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context, const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  ServingStatus status;
  {
    absl::MutexLock lock(&mu_);
    status = StatusLocked(request->service());
  }
  auto* reactor = context->DefaultReactor();
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
  } else {
    response->set_status(status);
    reactor->Finish(grpc::Status::OK);
  }
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(grpc::CallbackServerContext* context,
                                                                    const HealthCheckRequest* request) {
  const std::string peer = ClientAddress(context->peer());
  absl::MutexLock lock(&mu_);
  if (shut_down_) return new Refused(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is stopping"));
  uint32_t& watches = watches_per_peer_[peer];
  if (watches >= max_watches_per_peer_) {
    if (watches == 0) watches_per_peer_.erase(peer);
    return new Refused(grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("this client address already has ", max_watches_per_peer_,
                     " health Watch streams open (limits.max_health_watches_per_peer); end one or use Check")));
  }
  ++watches;
  auto* watcher = new Watcher(this, request->service(), peer);
  watchers_.insert(watcher);
  watcher->Send(StatusLocked(request->service()));
  return watcher;
}

}  // namespace upp::server
