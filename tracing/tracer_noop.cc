// tracing.h where the OpenTelemetry SDK was not found at configuration:
// spans do nothing, and Tracer::Create says why tracing is off.
#include "tracing/tracing.h"

namespace upp::tracing {

bool Available() { return false; }

struct Span::Impl {};
struct Tracer::Impl {};

Span::Span() = default;
Span::Span(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Span::Span(Span&&) noexcept = default;
Span& Span::operator=(Span&&) noexcept = default;
Span::~Span() = default;
bool Span::recording() const { return false; }
void Span::SetAttribute(std::string_view, int64_t) {}
void Span::SetAttribute(std::string_view, double) {}
void Span::SetAttribute(std::string_view, std::string_view) {}
void Span::SetAttribute(std::string_view, bool) {}
void Span::SetStatus(const absl::Status&) {}
Span Span::StartChild(std::string_view) const { return Span(); }
Span Span::StartChild(std::string_view, absl::Time) const { return Span(); }
void Span::End() {}
void Span::End(absl::Time) {}
std::string Span::TraceId() const { return ""; }
std::string Span::SpanId() const { return ""; }
std::string Span::TraceParent() const { return ""; }

Tracer::Tracer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tracer::~Tracer() = default;

absl::StatusOr<std::unique_ptr<Tracer>> Tracer::Create(const TracingOptions&) {
  return absl::FailedPreconditionError(
      "tracing: this build has no OpenTelemetry SDK (deploy/install-deps.sh installs opentelemetry-cpp-dev from "
      "bookworm-backports; reconfigure with CMake after)");
}

Span Tracer::StartServerSpan(std::string_view, std::string_view, std::string_view, absl::Time) const { return Span(); }
Span Tracer::StartLinkedSpan(std::string_view, const std::vector<std::string>&) const { return Span(); }
bool Tracer::ForceFlush(absl::Duration) { return true; }

}  // namespace upp::tracing
