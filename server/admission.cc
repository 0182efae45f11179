#include "server/admission.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "proto/api.h"
#include "server/metrics.h"
#include "server/system_memory.h"

namespace upp::server {
namespace {

constexpr double kGiB = 1073741824.0;

int64_t ToInt64(uint64_t v) { return static_cast<int64_t>(std::min<uint64_t>(v, std::numeric_limits<int64_t>::max())); }

// `status`, counted under `reason` in upp_admission_refusals_total.
absl::Status Refused(Metrics* metrics, const char* reason, absl::Status status) {
  if (metrics != nullptr) metrics->AdmissionRefused(reason);
  return status;
}

}  // namespace

AdmissionLimits AdmissionLimits::FromConfig(const unetrpp::v1::ServerConfig& config) {
  const auto& l = config.limits();
  AdmissionLimits out;
  out.max_concurrent_requests = l.max_concurrent_requests();
  out.max_pending_streams = l.max_pending_streams();
  out.max_requests_per_peer = l.per_caller().max_requests_per_peer();
  out.max_requests_per_principal = l.per_caller().max_requests_per_principal();
  out.max_bytes_in_flight = ToInt64(l.max_bytes_in_flight());
  out.max_bytes_per_principal = ToInt64(l.per_caller().max_bytes());
  out.max_windows_per_principal = ToInt64(l.per_caller().max_windows());
  out.max_queued_windows = ToInt64(l.max_queued_windows());
  out.max_device_bytes_in_flight = ToInt64(l.max_device_bytes_in_flight());
  return out;
}

// ------------------------------------------------------------- Reservation

Reservation::Reservation(Reservation&& other) noexcept { *this = std::move(other); }

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this == &other) return *this;
  Release();
  // No lock: a Reservation is used by one thread at a time (and Admission
  // moves new ones out while it holds its lock).
  admission_ = std::exchange(other.admission_, nullptr);
  caller_ = std::move(other.caller_);
  slot_ = other.slot_;
  bytes_ = std::exchange(other.bytes_, 0);
  windows_ = std::exchange(other.windows_, 0);
  device_bytes_ = std::exchange(other.device_bytes_, 0);
  device_ = std::move(other.device_);
  return *this;
}

absl::Status Reservation::AddBytes(int64_t bytes) {
  if (bytes <= 0) return absl::OkStatus();
  if (admission_ == nullptr) return absl::FailedPreconditionError("memory reserved without a request slot");
  Admission& a = *admission_;
  absl::MutexLock lock(&a.mu_);
  const int64_t limit = a.limits_.max_bytes_in_flight;
  if (bytes > limit)
    return Refused(a.metrics_, "memory_limit",
                   absl::ResourceExhaustedError(absl::StrFormat(
                       "this volume needs about %.1f GiB of working memory, more than the server's limit of %.1f GiB",
                       bytes / kGiB, limit / kGiB)));
  if (a.bytes_in_flight_ > limit - bytes)
    return Refused(
        a.metrics_, "memory_in_use",
        proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrFormat(
                                  "the server is at its memory limit (%.1f of %.1f GiB in use); retry in 30 s",
                                  a.bytes_in_flight_ / kGiB, limit / kGiB)),
                              absl::Seconds(30)));
  Admission::Counts& own = a.callers_[caller_];
  const int64_t own_limit = a.limits_.max_bytes_per_principal;
  if (own_limit > 0 && own.bytes > own_limit - bytes)
    return Refused(
        a.metrics_, "caller_memory",
        proto::WithRetryAfter(
            absl::ResourceExhaustedError(absl::StrFormat(
                "this request needs about %.2f GiB of working memory and your requests in flight hold %.2f GiB "
                "(your limit: %.2f GiB); retry when one has finished",
                bytes / kGiB, own.bytes / kGiB, own_limit / kGiB)),
            absl::Seconds(10)));
  own.bytes += bytes;
  bytes_ += bytes;
  a.bytes_in_flight_ += bytes;
  if (a.metrics_) a.metrics_->AddBytesInFlight(static_cast<double>(bytes));
  return absl::OkStatus();
}

void Reservation::ShrinkBytesTo(int64_t bytes) {
  if (admission_ == nullptr) return;
  absl::MutexLock lock(&admission_->mu_);
  if (bytes_ > bytes) admission_->ReleaseBytesLocked(*this, bytes_ - std::max<int64_t>(bytes, 0));
}

absl::Status Reservation::AddWindows(int64_t windows, int64_t queued_now) {
  if (admission_ == nullptr) return absl::FailedPreconditionError("windows reserved without a request slot");
  Admission& a = *admission_;
  absl::MutexLock lock(&a.mu_);
  if (queued_now > a.limits_.max_queued_windows - windows)
    return Refused(
        a.metrics_, "window_queue",
        proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat("the window queue is full (", queued_now,
                                                                        " windows waiting); retry in 30 s")),
                              absl::Seconds(30)));
  Admission::Counts& own = a.callers_[caller_];
  const int64_t limit = a.limits_.max_windows_per_principal;
  if (limit > 0 && own.windows > limit - windows)
    return Refused(
        a.metrics_, "caller_windows",
        proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat(
                                  "this request needs ", windows, " windows and your requests have ", own.windows,
                                  " queued or running (your limit: ", limit, "); retry when one has finished")),
                              absl::Seconds(10)));
  own.windows += windows;
  windows_ += windows;
  return absl::OkStatus();
}

void Reservation::ReleaseWindows() {
  if (admission_ == nullptr) return;
  absl::MutexLock lock(&admission_->mu_);
  admission_->ReleaseWindowsLocked(*this);
}

bool Reservation::AddDeviceBytes(const std::string& device, int64_t bytes) {
  if (admission_ == nullptr || device_bytes_ > 0) return false;
  Admission& a = *admission_;
  if (!a.device_budget_.Reserve(device, bytes)) return false;
  absl::MutexLock lock(&a.mu_);
  device_ = device;
  device_bytes_ = bytes;
  if (a.metrics_) a.metrics_->AddDeviceBytesInFlight(device, static_cast<double>(bytes));
  return true;
}

void Reservation::ReleaseDeviceBytes() {
  if (admission_ == nullptr) return;
  absl::MutexLock lock(&admission_->mu_);
  admission_->ReleaseDeviceLocked(*this);
}

void Reservation::Release() {
  Admission* const a = admission_;
  if (a == nullptr) return;
  bool idle = false;
  {
    absl::MutexLock lock(&a->mu_);
    a->ReleaseLocked(*this);
    idle = slot_ == Slot::kRequest && a->in_flight_ == 0;
    admission_ = nullptr;
  }
  // Idle: hand the freed heap back, so that one large request does not keep
  // its peak resident (under load the heap is kept for speed).
  if (idle) ReturnFreeMemory();
}

int64_t Reservation::bytes() const {
  if (admission_ == nullptr) return 0;
  absl::MutexLock lock(&admission_->mu_);
  return bytes_;
}

int64_t Reservation::windows() const {
  if (admission_ == nullptr) return 0;
  absl::MutexLock lock(&admission_->mu_);
  return windows_;
}

// --------------------------------------------------------------- Admission

Admission::Admission(AdmissionLimits limits, Metrics* metrics)
    : metrics_(metrics), device_budget_(limits.max_device_bytes_in_flight), limits_(limits) {
  if (metrics_ != nullptr)
    metrics_->AdmissionLimits(limits.max_concurrent_requests, limits.max_bytes_in_flight, limits.max_queued_windows);
}

void Admission::SetLimits(const AdmissionLimits& limits) {
  absl::MutexLock lock(&mu_);
  limits_ = limits;  // the device budget is device_budget_'s, sized at construction
  if (metrics_ != nullptr)
    metrics_->AdmissionLimits(limits.max_concurrent_requests, limits.max_bytes_in_flight, limits.max_queued_windows);
}

int64_t Admission::RequestsAllowed(const Caller& caller) const {
  return caller.principal() && limits_.max_requests_per_principal > 0 ? limits_.max_requests_per_principal
                                                                      : limits_.max_requests_per_peer;
}

absl::StatusOr<Reservation> Admission::BeginRequest(const Caller& caller, uint32_t* queue_position) {
  if (draining_)
    return Refused(metrics_, "draining",
                   absl::UnavailableError("the server is shutting down; retry on another replica"));
  absl::MutexLock lock(&mu_);
  if (in_flight_ >= limits_.max_concurrent_requests)
    return Refused(
        metrics_, "concurrent_requests",
        proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat("too many concurrent requests (", in_flight_,
                                                                        "); retry in a few seconds")),
                              absl::Seconds(5)));
  const int64_t running = HeldLocked(caller).requests;
  if (running >= RequestsAllowed(caller)) {
    return Refused(metrics_, "caller_requests",
                   proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat(
                                             caller.principal() ? "this caller" : "this client address",
                                             " already has ", running, " requests running (",
                                             caller.principal() ? "limits.per_caller.max_requests_per_principal"
                                                                : "limits.per_caller.max_requests_per_peer",
                                             "); retry when one has finished")),
                                         absl::Seconds(10)));
  }
  ++callers_[caller].requests;
  *queue_position = static_cast<uint32_t>(in_flight_);
  ++in_flight_;
  if (metrics_) metrics_->AddInFlight(1);
  return Reservation(this, caller, Reservation::Slot::kRequest);
}

absl::StatusOr<Reservation> Admission::BeginPendingStream(const Caller& caller) {
  absl::MutexLock lock(&mu_);
  if (pending_streams_ >= limits_.max_pending_streams)
    return Refused(
        metrics_, "pending_streams",
        proto::WithRetryAfter(absl::ResourceExhaustedError(absl::StrCat("too many streams without a RequestHeader (",
                                                                        pending_streams_, "); send the header first")),
                              absl::Seconds(5)));
  // Per caller too, as requests are: one address must not hold every slot.
  const int64_t pending = HeldLocked(caller).pending;
  if (pending >= RequestsAllowed(caller)) {
    return Refused(metrics_, "caller_pending_streams",
                   proto::WithRetryAfter(absl::ResourceExhaustedError(
                                             absl::StrCat("this caller already has ", pending,
                                                          " streams without a RequestHeader; send the header first")),
                                         absl::Seconds(5)));
  }
  ++callers_[caller].pending;
  ++pending_streams_;
  return Reservation(this, caller, Reservation::Slot::kPendingStream);
}

Admission::Counts Admission::HeldLocked(const Caller& caller) const {
  const auto it = callers_.find(caller);
  return it == callers_.end() ? Counts{} : it->second;
}

void Admission::ForgetIfEmptyLocked(const Caller& caller) {
  if (auto it = callers_.find(caller); it != callers_.end() && it->second.empty()) callers_.erase(it);
}

void Admission::ReleaseBytesLocked(Reservation& r, int64_t bytes) {
  if (bytes <= 0) return;
  r.bytes_ -= bytes;
  bytes_in_flight_ -= bytes;
  callers_[r.caller_].bytes -= bytes;
  if (metrics_) metrics_->AddBytesInFlight(-static_cast<double>(bytes));
}

void Admission::ReleaseWindowsLocked(Reservation& r) {
  if (r.windows_ == 0) return;
  callers_[r.caller_].windows -= r.windows_;
  r.windows_ = 0;
}

void Admission::ReleaseDeviceLocked(Reservation& r) {
  if (r.device_bytes_ == 0) return;
  device_budget_.Release(r.device_, r.device_bytes_);
  if (metrics_) metrics_->AddDeviceBytesInFlight(r.device_, -static_cast<double>(r.device_bytes_));
  r.device_bytes_ = 0;
}

void Admission::ReleaseLocked(Reservation& r) {
  ReleaseBytesLocked(r, r.bytes_);
  ReleaseWindowsLocked(r);
  ReleaseDeviceLocked(r);
  Counts& own = callers_[r.caller_];
  if (r.slot_ == Reservation::Slot::kRequest) {
    --own.requests;
    --in_flight_;
    if (metrics_) metrics_->AddInFlight(-1);
  } else {
    --own.pending;
    --pending_streams_;
  }
  ForgetIfEmptyLocked(r.caller_);
}

int64_t Admission::in_flight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

bool Admission::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithDeadline(absl::Condition(
                                   +[](int64_t* n) { return *n == 0; }, &in_flight_),
                               deadline);
}

int64_t Admission::bytes_in_flight() const {
  absl::MutexLock lock(&mu_);
  return bytes_in_flight_;
}

int64_t Admission::held_by(const Caller& caller) const {
  absl::MutexLock lock(&mu_);
  const Counts held = HeldLocked(caller);
  return held.requests + held.pending + held.bytes + held.windows;
}

}  // namespace upp::server
