#include "gateway/metrics.h"

#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"

namespace upp::gateway {
namespace {

prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800};
}

// The label values each family starts with (at zero).
constexpr const char* kInstanceOutcomes[] = {"stored",      "too_large",  "invalid",
                                             "spool_error", "spool_full", "association_too_long"};
constexpr const char* kSeriesOutcomes[] = {"completed", "failed", "unmatched", "retried", "quarantined"};
constexpr const char* kRuleOutcomes[] = {"completed", "failed", "retried"};
constexpr const char* kRejectReasons[] = {"calling_ae", "peer_address"};
constexpr const char* kStages[] = {"summarize", "segment", "report", "send"};

// The spool's file system, read at scrape time.
class SpoolCollector : public prometheus::Collectable {
 public:
  SpoolCollector(std::string dir, uint64_t min_free_bytes) : dir_(std::move(dir)), min_free_bytes_(min_free_bytes) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily free{"upp_gateway_spool_free_bytes",
                                  "Space left to the gateway on the spool's file system",
                                  prometheus::MetricType::Gauge,
                                  {}};
    prometheus::MetricFamily min{"upp_gateway_spool_min_free_bytes",
                                 "Free spool space under which C-STOREs are refused (listener.min_free_spool_bytes)",
                                 prometheus::MetricType::Gauge,
                                 {}};
    prometheus::ClientMetric m;
    m.gauge.value = static_cast<double>(min_free_bytes_);
    min.metric.push_back(m);
    std::error_code ec;
    const auto space = std::filesystem::space(dir_, ec);
    if (!ec) {
      m.gauge.value = static_cast<double>(space.available);
      free.metric.push_back(m);
    }
    return {free, min};
  }

 private:
  const std::string dir_;
  const uint64_t min_free_bytes_;
};

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
  dicomweb_instances_ = &BuildCounter()
                             .Name("upp_gateway_dicomweb_instances_total")
                             .Help(
                                 "Instances received by DICOMweb by transport (stow-rs: stored to the gateway, "
                                 "wado-rs: pulled) and outcome (stored, too_large, invalid, not_allowed, "
                                 "spool_error, spool_full)")
                             .Register(*registry_);
  dicomweb_requests_ = &BuildCounter()
                            .Name("upp_gateway_dicomweb_requests_total")
                            .Help("DICOMweb requests by endpoint (studies: STOW-RS, pull) and HTTP status code")
                            .Register(*registry_);
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
  for (const char* outcome : kInstanceOutcomes) instances_->Add({{"outcome", outcome}});
  for (const char* outcome : kSeriesOutcomes) series_->Add({{"outcome", outcome}, {"rule", ""}});
  for (const char* reason : kRejectReasons) rejected_->Add({{"reason", reason}});
  for (const char* stage : kStages) stage_seconds_->Add({{"stage", stage}}, SecondsBuckets());
}

void GatewayMetrics::AddRule(const std::string& rule) {
  for (const char* outcome : kRuleOutcomes) series_->Add({{"outcome", outcome}, {"rule", rule}});
}

void GatewayMetrics::WatchSpool(const std::string& spool_dir, uint64_t min_free_bytes) {
  spool_ = std::make_shared<SpoolCollector>(spool_dir, min_free_bytes);
  if (exposer_) exposer_->RegisterCollectable(spool_);
}

absl::Status GatewayMetrics::Expose(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_);
  if (spool_) exposer_->RegisterCollectable(spool_);
  return absl::OkStatus();
}

int GatewayMetrics::port() const {
  if (!exposer_) return 0;
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void GatewayMetrics::Instance(const std::string& outcome) { instances_->Add({{"outcome", outcome}}).Increment(); }

void GatewayMetrics::DicomWebInstance(const std::string& transport, const std::string& outcome) {
  dicomweb_instances_->Add({{"transport", transport}, {"outcome", outcome}}).Increment();
}

void GatewayMetrics::DicomWebRequest(const std::string& endpoint, int http_status) {
  dicomweb_requests_->Add({{"endpoint", endpoint}, {"code", std::to_string(http_status)}}).Increment();
}

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
