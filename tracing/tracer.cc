// tracing.h over the OpenTelemetry C++ SDK: OTLP/gRPC exporter, batch span
// processor with a bounded queue, parent-based trace-id-ratio sampling, W3C
// trace context.
#include "opentelemetry/trace/tracer.h"

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "opentelemetry/context/context.h"
#include "opentelemetry/context/propagation/text_map_propagator.h"
#include "opentelemetry/exporters/otlp/otlp_grpc_exporter_factory.h"
#include "opentelemetry/exporters/otlp/otlp_grpc_exporter_options.h"
#include "opentelemetry/sdk/common/global_log_handler.h"
#include "opentelemetry/sdk/resource/resource.h"
#include "opentelemetry/sdk/trace/batch_span_processor_factory.h"
#include "opentelemetry/sdk/trace/batch_span_processor_options.h"
#include "opentelemetry/sdk/trace/sampler.h"
#include "opentelemetry/sdk/trace/samplers/parent_factory.h"
#include "opentelemetry/sdk/trace/samplers/trace_id_ratio_factory.h"
#include "opentelemetry/sdk/trace/tracer_provider.h"
#include "opentelemetry/sdk/trace/tracer_provider_factory.h"
#include "opentelemetry/trace/context.h"
#include "opentelemetry/trace/propagation/http_trace_context.h"
#include "opentelemetry/trace/span.h"
#include "opentelemetry/trace/span_startoptions.h"
#include "tracing/tracing.h"

namespace upp::tracing {
namespace {

namespace nostd = opentelemetry::nostd;
namespace otel_trace = opentelemetry::trace;
namespace sdk_trace = opentelemetry::sdk::trace;

// The W3C headers, in and out of a map.
class HeaderCarrier : public opentelemetry::context::propagation::TextMapCarrier {
 public:
  nostd::string_view Get(nostd::string_view key) const noexcept override {
    for (const auto& [k, v] : headers_)
      if (absl::EqualsIgnoreCase(k, absl::string_view(key.data(), key.size()))) return v;
    return "";
  }
  void Set(nostd::string_view key, nostd::string_view value) noexcept override {
    headers_.emplace_back(std::string(key), std::string(value));
  }

 private:
  std::vector<std::pair<std::string, std::string>> headers_;
};

std::chrono::milliseconds Millis(absl::Duration d) { return std::chrono::milliseconds(absl::ToInt64Milliseconds(d)); }

// The SDK takes a span's start as a system time and its duration from
// steady times; the steady clock's reading at `t` (in the past) is derived
// once per span, and its end from the same reading, so that the exported
// start and end are exactly the absl::Times given.
std::chrono::steady_clock::time_point SteadyAt(absl::Time t) {
  const auto steady_now = std::chrono::steady_clock::now();
  return steady_now - absl::ToChronoNanoseconds(absl::Now() - t);
}

otel_trace::SpanContext ContextOf(std::string_view traceparent) {
  HeaderCarrier carrier;
  if (!traceparent.empty()) carrier.Set("traceparent", nostd::string_view(traceparent.data(), traceparent.size()));
  opentelemetry::context::Context empty;
  auto context = otel_trace::propagation::HttpTraceContext().Extract(carrier, empty);
  return otel_trace::GetSpan(context)->GetContext();
}

// Parent-based sampling (the ratio for new traces), except that a new
// trace linked to a sampled span is sampled: a batch carrying a sampled
// request's windows is exported with it, whatever the ratio.
class LinkedOrParentBasedSampler : public sdk_trace::Sampler {
 public:
  explicit LinkedOrParentBasedSampler(std::shared_ptr<sdk_trace::Sampler> ratio)
      : parent_based_(sdk_trace::ParentBasedSamplerFactory::Create(std::move(ratio))) {}

  sdk_trace::SamplingResult ShouldSample(const otel_trace::SpanContext& parent_context, otel_trace::TraceId trace_id,
                                         nostd::string_view name, otel_trace::SpanKind span_kind,
                                         const opentelemetry::common::KeyValueIterable& attributes,
                                         const otel_trace::SpanContextKeyValueIterable& links) noexcept override {
    if (!parent_context.IsValid()) {
      bool linked_sampled = false;
      links.ForEachKeyValue([&](otel_trace::SpanContext context, const opentelemetry::common::KeyValueIterable&) {
        linked_sampled = context.IsSampled();
        return !linked_sampled;
      });
      if (linked_sampled)
        return {sdk_trace::Decision::RECORD_AND_SAMPLE, nullptr, otel_trace::TraceState::GetDefault()};
    }
    return parent_based_->ShouldSample(parent_context, trace_id, name, span_kind, attributes, links);
  }
  nostd::string_view GetDescription() const noexcept override { return "LinkedOrParentBased"; }

 private:
  std::unique_ptr<sdk_trace::Sampler> parent_based_;
};

}  // namespace

bool Available() { return true; }

struct Span::Impl {
  nostd::shared_ptr<otel_trace::Tracer> tracer;
  nostd::shared_ptr<otel_trace::Span> span;
  // Atomic: a call's stages record children from other threads while its
  // reaction may end the span.
  std::atomic<bool> ended{false};
  absl::Time start;
  std::chrono::steady_clock::time_point start_steady;

  // A span started at `at` (InfinitePast: now) with `options` and `links`.
  template <class Links>
  static std::unique_ptr<Impl> Start(const nostd::shared_ptr<otel_trace::Tracer>& tracer, std::string_view name,
                                     otel_trace::StartSpanOptions options, const Links& links, absl::Time at) {
    auto impl = std::make_unique<Impl>();
    impl->tracer = tracer;
    impl->start = at == absl::InfinitePast() ? absl::Now() : at;
    impl->start_steady = SteadyAt(impl->start);
    options.start_system_time = opentelemetry::common::SystemTimestamp(absl::ToChronoTime(impl->start));
    options.start_steady_time = opentelemetry::common::SteadyTimestamp(impl->start_steady);
    const std::map<std::string, std::string> no_attributes;
    impl->span = tracer->StartSpan(nostd::string_view(name.data(), name.size()), no_attributes, links, options);
    return impl;
  }
};

namespace {
using NoLinks = std::vector<std::pair<otel_trace::SpanContext, std::map<std::string, std::string>>>;
}  // namespace

struct Tracer::Impl {
  std::unique_ptr<sdk_trace::TracerProvider> provider;
  nostd::shared_ptr<otel_trace::Tracer> tracer;
  absl::Duration export_timeout;
};

Span::Span() = default;
Span::Span(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Span::Span(Span&&) noexcept = default;
Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
Span::~Span() { End(); }

bool Span::recording() const { return impl_ && !impl_->ended.load() && impl_->span->IsRecording(); }

void Span::SetAttribute(std::string_view key, int64_t value) {
  if (recording()) impl_->span->SetAttribute(nostd::string_view(key.data(), key.size()), value);
}
void Span::SetAttribute(std::string_view key, double value) {
  if (recording()) impl_->span->SetAttribute(nostd::string_view(key.data(), key.size()), value);
}
void Span::SetAttribute(std::string_view key, std::string_view value) {
  if (recording())
    impl_->span->SetAttribute(nostd::string_view(key.data(), key.size()),
                              nostd::string_view(value.data(), value.size()));
}
void Span::SetAttribute(std::string_view key, bool value) {
  if (recording()) impl_->span->SetAttribute(nostd::string_view(key.data(), key.size()), value);
}

void Span::SetStatus(const absl::Status& status) {
  if (!recording()) return;
  // The code's name only: a message may quote what a caller sent.
  if (status.ok())
    impl_->span->SetStatus(otel_trace::StatusCode::kOk);
  else
    impl_->span->SetStatus(otel_trace::StatusCode::kError, absl::StatusCodeToString(status.code()));
}

Span Span::StartChild(std::string_view name) const { return StartChild(name, absl::InfinitePast()); }

Span Span::StartChild(std::string_view name, absl::Time start) const {
  if (!impl_) return Span();
  otel_trace::StartSpanOptions options;
  options.parent = impl_->span->GetContext();
  return Span(Impl::Start(impl_->tracer, name, options, NoLinks(), start));
}

void Span::End() { End(absl::Now()); }

void Span::End(absl::Time end) {
  if (!impl_ || impl_->ended.exchange(true)) return;
  otel_trace::EndSpanOptions options;
  options.end_steady_time = opentelemetry::common::SteadyTimestamp(
      impl_->start_steady + absl::ToChronoNanoseconds(std::max(end - impl_->start, absl::ZeroDuration())));
  impl_->span->End(options);
}

std::string Span::TraceId() const {
  if (!impl_ || !impl_->span->GetContext().IsValid()) return "";
  std::array<char, 32> hex;
  impl_->span->GetContext().trace_id().ToLowerBase16(hex);
  return std::string(hex.data(), hex.size());
}

std::string Span::SpanId() const {
  if (!impl_ || !impl_->span->GetContext().IsValid()) return "";
  std::array<char, 16> hex;
  impl_->span->GetContext().span_id().ToLowerBase16(hex);
  return std::string(hex.data(), hex.size());
}

std::string Span::TraceParent() const {
  if (!impl_ || !impl_->span->GetContext().IsValid()) return "";
  HeaderCarrier carrier;
  opentelemetry::context::Context empty;
  auto context = otel_trace::SetSpan(empty, impl_->span);
  otel_trace::propagation::HttpTraceContext().Inject(carrier, context);
  return std::string(carrier.Get("traceparent"));
}

Tracer::Tracer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Tracer::~Tracer() {
  if (!impl_) return;
  impl_->provider->ForceFlush(Millis(impl_->export_timeout));
  impl_->provider->Shutdown();
}

absl::StatusOr<std::unique_ptr<Tracer>> Tracer::Create(const TracingOptions& options) {
  if (options.endpoint.empty()) return absl::InvalidArgumentError("tracing: no endpoint");
  if (!(options.sampling_ratio >= 0 && options.sampling_ratio <= 1))
    return absl::InvalidArgumentError("tracing: sampling_ratio must be within 0..1");
  if (options.queue_size == 0) return absl::InvalidArgumentError("tracing: queue_size must be positive");

  // The SDK's own log: errors only (a failed export, once per batch); its
  // warning for each span dropped from a full queue would flood the log
  // exactly when the collector is gone.
  opentelemetry::sdk::common::internal_log::GlobalLogHandler::SetLogLevel(
      opentelemetry::sdk::common::internal_log::LogLevel::Error);
  opentelemetry::exporter::otlp::OtlpGrpcExporterOptions exporter_options;
  const bool https = absl::StartsWith(options.endpoint, "https://");
  exporter_options.endpoint = https || absl::StartsWith(options.endpoint, "http://")
                                  ? options.endpoint
                                  : absl::StrCat("http://", options.endpoint);
  exporter_options.use_ssl_credentials = https;
  exporter_options.timeout = Millis(options.export_timeout);
  auto exporter = opentelemetry::exporter::otlp::OtlpGrpcExporterFactory::Create(exporter_options);

  sdk_trace::BatchSpanProcessorOptions batch;
  batch.max_queue_size = options.queue_size;
  batch.max_export_batch_size = std::min(options.max_export_batch_size, options.queue_size);
  batch.schedule_delay_millis = Millis(options.schedule_delay);
  auto processor = sdk_trace::BatchSpanProcessorFactory::Create(std::move(exporter), batch);

  opentelemetry::sdk::resource::ResourceAttributes attributes;
  for (const auto& [k, v] : options.resource_attributes) attributes.SetAttribute(k, v);
  attributes.SetAttribute("service.name", options.service_name);
  if (!options.service_version.empty()) attributes.SetAttribute("service.version", options.service_version);
  auto resource = opentelemetry::sdk::resource::Resource::Create(attributes);

  std::shared_ptr<sdk_trace::Sampler> ratio =
      sdk_trace::TraceIdRatioBasedSamplerFactory::Create(options.sampling_ratio);
  auto impl = std::make_unique<Impl>();
  impl->provider = sdk_trace::TracerProviderFactory::Create(
      std::move(processor), resource, std::make_unique<LinkedOrParentBasedSampler>(std::move(ratio)));
  impl->tracer = impl->provider->GetTracer("unetrpp-serve");
  impl->export_timeout = options.export_timeout;
  return std::unique_ptr<Tracer>(new Tracer(std::move(impl)));
}

Span Tracer::StartServerSpan(std::string_view name, std::string_view traceparent, std::string_view tracestate,
                             absl::Time start) const {
  HeaderCarrier carrier;
  if (!traceparent.empty()) carrier.Set("traceparent", nostd::string_view(traceparent.data(), traceparent.size()));
  if (!tracestate.empty()) carrier.Set("tracestate", nostd::string_view(tracestate.data(), tracestate.size()));
  opentelemetry::context::Context empty;
  auto context = otel_trace::propagation::HttpTraceContext().Extract(carrier, empty);
  otel_trace::StartSpanOptions options;
  options.kind = otel_trace::SpanKind::kServer;
  options.parent = otel_trace::GetSpan(context)->GetContext();
  return Span(Span::Impl::Start(impl_->tracer, name, options, NoLinks(), start));
}

Span Tracer::StartLinkedSpan(std::string_view name, const std::vector<std::string>& links) const {
  NoLinks contexts;
  for (const std::string& link : links)
    if (auto context = ContextOf(link); context.IsValid())
      contexts.emplace_back(context, NoLinks::value_type::second_type());
  otel_trace::StartSpanOptions options;
  // A root, whatever span the thread's context holds.
  options.parent = opentelemetry::context::Context(otel_trace::kIsRootSpanKey, true);
  return Span(Span::Impl::Start(impl_->tracer, name, options, contexts, absl::InfinitePast()));
}

bool Tracer::ForceFlush(absl::Duration timeout) { return impl_->provider->ForceFlush(Millis(timeout)); }

}  // namespace upp::tracing
