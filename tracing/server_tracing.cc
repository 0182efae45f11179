#include "tracing/server_tracing.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace upp::tracing {
namespace {

absl::Mutex tracer_mu(absl::kConstInit);
std::shared_ptr<Tracer>* installed ABSL_GUARDED_BY(tracer_mu) = nullptr;

absl::Duration SecondsOr(double seconds, absl::Duration otherwise) {
  return seconds > 0 ? absl::Seconds(seconds) : otherwise;
}

std::string_view Header(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata, const char* name) {
  const auto it = metadata.find(name);
  return it == metadata.end() ? std::string_view() : std::string_view(it->second.data(), it->second.size());
}

}  // namespace

absl::StatusOr<TracingOptions> OptionsFromConfig(const unetrpp::v1::Tracing& config) {
  TracingOptions options;
  options.endpoint = config.endpoint();
  // Without one in the file, OpenTelemetry's own variables (as every SDK
  // reads them): a Kubernetes ConfigMap can point the pods at a collector
  // without a new configuration file (deploy/k8s/tracing/).
  for (const char* variable : {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"}) {
    const char* value = std::getenv(variable);
    if (options.endpoint.empty() && value != nullptr) options.endpoint = value;
  }
  if (config.has_sampling_ratio()) options.sampling_ratio = config.sampling_ratio();
  if (!(options.sampling_ratio >= 0 && options.sampling_ratio <= 1))
    return absl::InvalidArgumentError("tracing.sampling_ratio: must be within 0..1");
  if (config.queue_size() > 0) options.queue_size = config.queue_size();
  if (config.max_export_batch_size() > 0) options.max_export_batch_size = config.max_export_batch_size();
  if (config.schedule_delay_seconds() < 0 || config.export_timeout_seconds() < 0)
    return absl::InvalidArgumentError("tracing: schedule_delay_seconds and export_timeout_seconds must be >= 0");
  options.schedule_delay = SecondsOr(config.schedule_delay_seconds(), options.schedule_delay);
  options.export_timeout = SecondsOr(config.export_timeout_seconds(), options.export_timeout);
  if (!config.service_name().empty()) options.service_name = config.service_name();
  for (const auto& [key, value] : config.resource_attributes()) options.resource_attributes[key] = value;
  return options;
}

void InstallTracer(std::shared_ptr<Tracer> tracer) {
  std::shared_ptr<Tracer> old;  // flushed and stopped outside the lock
  absl::MutexLock lock(&tracer_mu);
  if (installed == nullptr) installed = new std::shared_ptr<Tracer>();  // never destroyed: spans may outlive main
  old = std::exchange(*installed, std::move(tracer));
}

std::shared_ptr<Tracer> CurrentTracer() {
  absl::MutexLock lock(&tracer_mu);
  return installed == nullptr ? nullptr : *installed;
}

Span StartCallSpan(std::string_view name, const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                   absl::Time start) {
  const std::shared_ptr<Tracer> tracer = CurrentTracer();
  if (!tracer) return Span();
  return tracer->StartServerSpan(name, Header(metadata, "traceparent"), Header(metadata, "tracestate"), start);
}

}  // namespace upp::tracing
