// What the server and the gateway need of tracing.h around a gRPC call: the
// process's tracer, built from the configuration's `tracing` block, and a
// span per call continuing the caller's W3C trace context from the call's
// metadata (`traceparent`, `tracestate`).
//
// Threading: InstallTracer and CurrentTracer from any thread; a call's span
// as tracing.h says.
#ifndef UPP_TRACING_SERVER_TRACING_H_
#define UPP_TRACING_SERVER_TRACING_H_

#include <grpcpp/support/string_ref.h>

#include <map>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "tracing/tracing.h"
#include "unetrpp/v1/config.pb.h"

namespace upp::tracing {

// TracingOptions from the configuration block, defaults filled in; an
// error names the field. The endpoint is the block's, else
// $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else $OTEL_EXPORTER_OTLP_ENDPOINT;
// none: tracing stays off.
absl::StatusOr<TracingOptions> OptionsFromConfig(const unetrpp::v1::Tracing& config);

// The tracer spans of calls use (nullptr: tracing off, the default).
void InstallTracer(std::shared_ptr<Tracer> tracer);
std::shared_ptr<Tracer> CurrentTracer();

// A server span named `name` for a call with this client metadata, begun at
// `start`; not recording when no tracer is installed.
Span StartCallSpan(std::string_view name, const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
                   absl::Time start = absl::InfinitePast());

}  // namespace upp::tracing

#endif  // UPP_TRACING_SERVER_TRACING_H_
