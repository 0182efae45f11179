#include "gateway/metrics.h"

#include "absl/strings/str_cat.h"

namespace upp::gateway {
namespace {

prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800};
}

}  // namespace

GatewayMetrics::GatewayMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  instances_ = &BuildCounter()
                    .Name("upp_gateway_instances_received_total")
                    .Help(
                        "C-STORE requests by outcome (stored, too_large, invalid, spool_error, spool_full, "
                        "association_too_long)")
                    .Register(*registry_);
  series_ = &BuildCounter()
                 .Name("upp_gateway_series_total")
                 .Help("Series by outcome (completed, failed, unmatched, retried, quarantined) and routing rule")
                 .Register(*registry_);
  rejected_ = &BuildCounter()
                   .Name("upp_gateway_associations_rejected_total")
                   .Help("Associations refused at their request by reason (calling_ae, peer_address)")
                   .Register(*registry_);
  pruned_series_ = &BuildCounter()
                        .Name("upp_gateway_pruned_series_total")
                        .Help("Kept series (failed/, unmatched/, quarantine/) deleted by retention")
                        .Register(*registry_)
                        .Add({});
  pruned_bytes_ = &BuildCounter()
                       .Name("upp_gateway_pruned_bytes_total")
                       .Help("Bytes of kept series deleted by retention")
                       .Register(*registry_)
                       .Add({});
  stage_seconds_ = &BuildHistogram()
                        .Name("upp_gateway_stage_duration_seconds")
                        .Help("Time per series stage (summarize, segment, report, send)")
                        .Register(*registry_);
  series_seconds_ = &BuildHistogram()
                         .Name("upp_gateway_series_duration_seconds")
                         .Help("A series from being claimed to its results sent")
                         .Register(*registry_)
                         .Add({}, SecondsBuckets());
  series_received_ = &BuildCounter()
                          .Name("upp_gateway_series_received_total")
                          .Help("Complete series taken from the spool (first attempts)")
                          .Register(*registry_)
                          .Add({});
  queued_ = &BuildGauge()
                 .Name("upp_gateway_queued_series")
                 .Help("Series in the spool: arriving, waiting or being processed")
                 .Register(*registry_)
                 .Add({});
}

absl::Status GatewayMetrics::Expose(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  return absl::OkStatus();
}

int GatewayMetrics::port() const {
  if (!exposer_) return 0;
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void GatewayMetrics::Instance(const std::string& outcome) { instances_->Add({{"outcome", outcome}}).Increment(); }

void GatewayMetrics::Series(const std::string& outcome, const std::string& rule) {
  series_->Add({{"outcome", outcome}, {"rule", rule}}).Increment();
}

void GatewayMetrics::AssociationRejected(const std::string& reason) {
  rejected_->Add({{"reason", reason}}).Increment();
}

void GatewayMetrics::Pruned(int64_t series, int64_t bytes) {
  pruned_series_->Increment(static_cast<double>(series));
  pruned_bytes_->Increment(static_cast<double>(bytes));
}

void GatewayMetrics::Stage(const std::string& stage, double seconds) {
  stage_seconds_->Add({{"stage", stage}}, SecondsBuckets()).Observe(seconds);
}

}  // namespace upp::gateway
