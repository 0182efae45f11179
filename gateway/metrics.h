// Prometheus metrics of the DICOM gateway (prometheus-cpp), served at
// /metrics on their own port, named like the server's (upp_gateway_...).
//
// Threading: every method is thread-safe (prometheus-cpp metrics are
// atomic; families are created once, in the constructor).
#ifndef UPP_GATEWAY_METRICS_H_
#define UPP_GATEWAY_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace upp::gateway {

class GatewayMetrics {
 public:
  // Creates every outcome's, reason's and stage's series at zero (rule ""
  // for series), so that an alert on increase() sees the first failure.
  GatewayMetrics();
  // Serves /metrics on `address` ("host:port"; port 0 picks one).
  absl::Status Expose(const std::string& address);
  int port() const;

  // The series outcomes of routing rule `rule` at zero (completed, failed,
  // retried), for each rule of the configuration.
  void AddRule(const std::string& rule);
  // upp_gateway_spool_free_bytes (the space of `spool_dir`'s file system
  // left to the gateway, read at scrape time) and
  // upp_gateway_spool_min_free_bytes (the margin under which C-STOREs are
  // refused with spool_full).
  void WatchSpool(const std::string& spool_dir, uint64_t min_free_bytes);

  // outcome: stored, too_large, invalid, spool_error, spool_full, association_too_long.
  void Instance(const std::string& outcome);
  // An instance received by DICOMweb (upp_gateway_dicomweb_instances_total):
  // transport "stow-rs" (stored to the gateway) or "wado-rs" (pulled);
  // outcome stored, too_large, invalid, not_allowed, spool_error, spool_full.
  void DicomWebInstance(const std::string& transport, const std::string& outcome);
  // A DICOMweb request (endpoint "studies": STOW-RS, "pull") answered with
  // `http_status` (upp_gateway_dicomweb_requests_total{endpoint,code}).
  void DicomWebRequest(const std::string& endpoint, int http_status);
  // A complete series taken from the spool for the first time.
  void SeriesReceived() { series_received_->Increment(); }
  // An association refused at its request: reason calling_ae, peer_address.
  void AssociationRejected(const std::string& reason);
  // Kept series (failed/, unmatched/, quarantine/) deleted by retention.
  void Pruned(int64_t series, int64_t bytes);
  // outcome: completed, failed, unmatched, retried, quarantined; rule "" when none.
  void Series(const std::string& outcome, const std::string& rule);
  // stage: summarize, segment, report, send.
  void Stage(const std::string& stage, double seconds);
  // From claiming a series to its answer being sent.
  void SeriesLatency(double seconds) { series_seconds_->Observe(seconds); }
  void SetQueued(int64_t series) { queued_->Set(static_cast<double>(series)); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> spool_;
  prometheus::Family<prometheus::Counter>* instances_;
  prometheus::Family<prometheus::Counter>* series_;
  prometheus::Family<prometheus::Counter>* rejected_;
  prometheus::Counter* pruned_series_;
  prometheus::Counter* pruned_bytes_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Histogram* series_seconds_;
  prometheus::Counter* series_received_;
  prometheus::Gauge* queued_;
  prometheus::Family<prometheus::Counter>* dicomweb_instances_;
  prometheus::Family<prometheus::Counter>* dicomweb_requests_;
};

}  // namespace upp::gateway

#endif  // UPP_GATEWAY_METRICS_H_
