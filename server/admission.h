// Admission control: what the requests in flight may hold of the server, and
// who holds it. A request's share is a Reservation, a move-only value that
// grows and shrinks under the admission lock and gives back everything it
// holds exactly once, when it is released or destroyed: request slot (or a
// stream's slot before its header), the caller's counts, working memory,
// windows and GPU memory. Whoever still works for a request holds its
// Reservation, so nothing is given back before the work has stopped.
//
// Knows nothing of gRPC or of the pipeline (Triton core keeps its rate
// limiter apart from the frontends the same way); unit-tested alone
// (tests/server/admission_test.cc).
//
// Threading: any thread. One lock (Admission::mu_) guards every count,
// including each Reservation's own; a Reservation itself must not be used
// by two threads at once without the caller's own ordering (a call's
// reactions and its pool tasks are ordered by the reactor).
#ifndef UPP_SERVER_ADMISSION_H_
#define UPP_SERVER_ADMISSION_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/device_budget.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::server {

class Metrics;

// Who a request is counted as: an authenticated principal, or, without
// credentials, the client's address.
class Caller {
 public:
  static Caller Principal(std::string name) { return Caller(true, std::move(name)); }
  static Caller Address(std::string address) { return Caller(false, std::move(address)); }
  Caller() = default;

  bool principal() const { return principal_; }
  const std::string& name() const { return name_; }
  friend bool operator<(const Caller& a, const Caller& b) {
    return a.principal_ != b.principal_ ? a.principal_ < b.principal_ : a.name_ < b.name_;
  }

 private:
  Caller(bool principal, std::string name) : principal_(principal), name_(std::move(name)) {}
  bool principal_ = false;
  std::string name_;
};

// The limits admission enforces, read once from the configuration.
struct AdmissionLimits {
  int64_t max_concurrent_requests = 0;
  int64_t max_pending_streams = 0;
  int64_t max_requests_per_peer = 0;
  int64_t max_requests_per_principal = 0;  // 0: as per peer
  int64_t max_bytes_in_flight = 0;
  int64_t max_bytes_per_principal = 0;    // 0: only the server-wide limit
  int64_t max_windows_per_principal = 0;  // 0: none
  int64_t max_queued_windows = 0;
  int64_t max_device_bytes_in_flight = 0;  // per job device

  static AdmissionLimits FromConfig(const unetrpp::v1::ServerConfig& config);
};

class Admission;

class Reservation {
 public:
  Reservation() = default;  // holds nothing
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  // `bytes` more working memory: RESOURCE_EXHAUSTED (with a retry hint when
  // waiting can help) past max_bytes_in_flight or the caller's own limit.
  absl::Status AddBytes(int64_t bytes);
  // Gives back what is held above `bytes` (a result waiting for a slow
  // reader holds only its own bytes).
  void ShrinkBytesTo(int64_t bytes);
  // `windows` to be queued: RESOURCE_EXHAUSTED when the queue, holding
  // `queued_now`, would pass max_queued_windows, or the caller's own limit.
  absl::Status AddWindows(int64_t windows, int64_t queued_now);
  void ReleaseWindows();
  // GPU memory for a job on `device`: false, taking nothing, when the
  // device's jobs would pass max_device_bytes_in_flight (the job then runs
  // on the CPU, whose memory AddBytes counted).
  bool AddDeviceBytes(const std::string& device, int64_t bytes);
  void ReleaseDeviceBytes();
  // Everything, once; a Reservation that holds nothing is a no-op.
  void Release();

  bool holds_slot() const { return admission_ != nullptr; }
  int64_t bytes() const;
  int64_t windows() const;

 private:
  friend class Admission;
  enum class Slot { kRequest, kPendingStream };
  Reservation(Admission* admission, Caller caller, Slot slot)
      : admission_(admission), caller_(std::move(caller)), slot_(slot) {}

  Admission* admission_ = nullptr;  // null: holds nothing
  Caller caller_;
  Slot slot_ = Slot::kRequest;
  // Changed under admission_->mu_ only.
  int64_t bytes_ = 0, windows_ = 0, device_bytes_ = 0;
  std::string device_;
};

class Admission {
 public:
  // `metrics` (may be null in tests) sees requests, bytes and device bytes
  // in flight.
  Admission(AdmissionLimits limits, Metrics* metrics);

  // A request slot: UNAVAILABLE while draining, RESOURCE_EXHAUSTED (with a
  // retry hint) past max_concurrent_requests or the caller's requests.
  // `queue_position`: the requests in flight before this one.
  absl::StatusOr<Reservation> BeginRequest(const Caller& caller, uint32_t* queue_position);
  // A stream that has not sent its header yet holds a reactor and buffers:
  // at most max_pending_streams, and per caller as many as it may have
  // requests.
  absl::StatusOr<Reservation> BeginPendingStream(const Caller& caller);

  // New limits (a configuration reload) for what is admitted from now on;
  // what is held stays held. The GPU budget stays the one given at
  // construction (which limits a reload changes: config_reload.h).
  void SetLimits(const AdmissionLimits& limits);
  void StartDraining() { draining_ = true; }
  bool draining() const { return draining_.load(); }
  int64_t in_flight() const;
  // Until no request is in flight or `deadline`; true if none is.
  bool WaitIdle(absl::Time deadline);

  // What is held, for tests and metrics.
  int64_t bytes_in_flight() const;
  int64_t held_by(const Caller& caller) const;  // slots, bytes, windows: 0 when nothing

 private:
  friend class Reservation;
  // One caller's share (one map, not one per count).
  struct Counts {
    int64_t requests = 0, pending = 0, bytes = 0, windows = 0;
    bool empty() const { return requests == 0 && pending == 0 && bytes == 0 && windows == 0; }
  };
  int64_t RequestsAllowed(const Caller& caller) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The caller's counts, without adding an entry for it (a refusal leaves
  // the map as it was).
  Counts HeldLocked(const Caller& caller) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetIfEmptyLocked(const Caller& caller) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(Reservation& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseBytesLocked(Reservation& r, int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseWindowsLocked(Reservation& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseDeviceLocked(Reservation& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Metrics* const metrics_;
  std::atomic<bool> draining_{false};
  DeviceBudget device_budget_;
  mutable absl::Mutex mu_;
  AdmissionLimits limits_ ABSL_GUARDED_BY(mu_);
  int64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t pending_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t bytes_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<Caller, Counts> callers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace upp::server

#endif  // UPP_SERVER_ADMISSION_H_
