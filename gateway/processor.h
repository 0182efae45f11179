// The gateway's work loop: claims complete series from the spool, routes
// them by the configured rules, has the segmentation service segment them
// (streamed from the spool files over gRPC), writes the volume report, and
// sends SEG and report to the destination AE. Failures are retried with
// backoff up to max_attempts (server unavailable, destination down); a
// series that cannot succeed (refused by the server, e.g. slices missing)
// is moved to <spool>/failed with a reason, never sent half-done.
//
// Tracing (tracing/server_tracing.h's installed tracer; none: off): a
// trace per attempt at a series, its root span `Series` with children
// `receive` (first to last instance's arrival, first attempt only), `wait`
// (from the last arrival until the spool judged the series complete and it
// was claimed; first attempt only), `segment` (the call; its traceparent
// goes to the service, whose Segment span is its child), `build` (SEG and
// report written) and `send`. The log line that starts an attempt names
// its trace id.
//
// Threading: Run() on one thread processes one series at a time (the
// service batches across its callers; one gateway keeps one request in
// flight). Stop() may be called from any thread: the series in flight is
// finished, then Run() returns; the rest stays in the spool.
#ifndef UPP_GATEWAY_PROCESSOR_H_
#define UPP_GATEWAY_PROCESSOR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "gateway/metrics.h"
#include "gateway/spool.h"
#include "unetrpp/v1/gateway.pb.h"

namespace upp::gateway {

// Whether a failed series is worth another attempt later: the service or the
// destination was down, overloaded or too slow. RESOURCE_EXHAUSTED only with
// the service's retry hint (proto::RetryAfter): without one the series is
// over a per-request limit of the service, and sending it again cannot help.
bool Retryable(const absl::Status& s);

class Processor {
 public:
  // `spool` and `metrics` must outlive the processor.
  Processor(const unetrpp::v1::GatewayConfig& config, Spool* spool, GatewayMetrics* metrics);

  // Recover(), then claims and processes series, and prunes what is kept
  // (Prune(), every minute), until Stop().
  void Run();
  // Quarantines the series a dead process left in flight too often
  // (Spool::RecoverInterrupted), with a log line and metric.
  void Recover();
  // Applies config.retention to failed/, unmatched/ and quarantine/.
  void Prune();
  void Stop() {
    if (!stop_.HasBeenNotified()) stop_.Notify();
  }

  // What became of one claimed series.
  enum class Outcome { kCompleted, kUnmatched, kRetry, kFailed };
  // Processes one claimed series and settles it in the spool.
  Outcome ProcessSeries(const std::string& active_dir);

 private:
  struct Attempt;
  Outcome ProcessAttempt(Attempt& attempt, int attempts, absl::Time start);
  absl::Status SegmentAndReport(Attempt& attempt);
  absl::Status Send(const Attempt& attempt);
  Outcome Settle(const std::string& active_dir, const std::string& rule, int attempts, const absl::Status& status);

  const unetrpp::v1::GatewayConfig config_;
  Spool* const spool_;
  GatewayMetrics* const metrics_;
  absl::Notification stop_;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_PROCESSOR_H_
