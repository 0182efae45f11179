// OpenTelemetry tracing for the server and the gateway, behind a thin
// interface that names no OpenTelemetry type: callers (server/, gateway/)
// compile the same whether the SDK is there or not.
//
// With the SDK (deploy/install-deps.sh installs opentelemetry-cpp-dev from
// bookworm-backports; CMake finds it, see UPP_WITH_OTEL), tracer.cc exports
// spans over OTLP/gRPC through a batch span processor whose queue is bounded:
// when the collector is slow or gone, spans are dropped, never a request,
// and memory stays bounded. Without it, tracer_noop.cc makes every span a
// no-op and Tracer::Create says that tracing is not built in.
//
// Spans carry only what is safe to export: counts, sizes, model names,
// status codes. Never a patient attribute, a UID or a file name.
//
// Threading: a Tracer is thread-safe; a Span is used by one thread at a
// time (moved between threads as the request moves).
#ifndef UPP_TRACING_TRACING_H_
#define UPP_TRACING_TRACING_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace upp::tracing {

// Whether this build exports traces (the OpenTelemetry SDK was found).
bool Available();

struct TracingOptions {
  // OTLP/gRPC collector, "host:port" (plaintext) or "https://host:port".
  std::string endpoint;
  // Head sampling of new traces (0..1); a caller's sampled flag is kept.
  double sampling_ratio = 1.0;
  // Spans waiting for export; beyond this they are dropped.
  size_t queue_size = 2048;
  size_t max_export_batch_size = 512;
  absl::Duration schedule_delay = absl::Seconds(5);
  absl::Duration export_timeout = absl::Seconds(10);
  // Resource: service.name, service.version, and e.g. k8s.pod.name.
  std::string service_name = "unetrpp-serve";
  std::string service_version;
  std::map<std::string, std::string> resource_attributes;
};

class Span {
 public:
  struct Impl;
  Span();  // not recording
  explicit Span(std::unique_ptr<Impl> impl);
  Span(Span&&) noexcept;
  Span& operator=(Span&&) noexcept;
  ~Span();  // ends the span if End was not called

  bool recording() const;
  void SetAttribute(std::string_view key, int64_t value);
  void SetAttribute(std::string_view key, double value);
  void SetAttribute(std::string_view key, std::string_view value);
  void SetAttribute(std::string_view key, const char* value) { SetAttribute(key, std::string_view(value)); }
  void SetAttribute(std::string_view key, bool value);
  // The span's status: unset when `status` is OK, else error with the code's name.
  void SetStatus(const absl::Status& status);
  // A child of this span, started now, or at `start`: a stage whose times
  // were kept as it ran is recorded after the fact, costing nothing while
  // it runs. Safe from any thread, also while another ends this span.
  Span StartChild(std::string_view name) const;
  Span StartChild(std::string_view name, absl::Time start) const;
  // Ends the span now, or at `end` (not before its start). The exported
  // times are exactly the absl::Times given, so a child recorded within its
  // parent's times is exported within them.
  void End();
  void End(absl::Time end);

  // 32 lowercase hex digits; "" when the span has no valid context.
  std::string TraceId() const;
  std::string SpanId() const;
  // The W3C traceparent naming this span, to propagate it; "" when invalid.
  std::string TraceParent() const;

 private:
  std::unique_ptr<Impl> impl_;
};

class Tracer {
 public:
  struct Impl;
  // Fails on an empty endpoint, a ratio outside 0..1, a zero queue, or a
  // build without the SDK.
  static absl::StatusOr<std::unique_ptr<Tracer>> Create(const TracingOptions& options);
  ~Tracer();  // exports what is queued (up to export_timeout), then stops

  // A server span named `name`: the child of the caller's span where
  // `traceparent` (W3C trace context, with `tracestate`) parses, else the
  // root of a new trace.
  // `start`: when the call began (absl::InfinitePast(): now).
  Span StartServerSpan(std::string_view name, std::string_view traceparent, std::string_view tracestate = {},
                       absl::Time start = absl::InfinitePast()) const;
  // The root of a trace of its own, started now, with links to the spans
  // named by `links` (W3C traceparents, as Span::TraceParent gives them;
  // one that does not parse is left out): work shared by several traces,
  // such as a batch carrying windows of several requests. Sampled when any
  // linked span is, else by the sampling ratio.
  Span StartLinkedSpan(std::string_view name, const std::vector<std::string>& links) const;
  // Exports what is queued; false when it did not finish within `timeout`.
  bool ForceFlush(absl::Duration timeout);

 private:
  explicit Tracer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upp::tracing

#endif  // UPP_TRACING_TRACING_H_
