#include "tracing/tracing.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "tracing/server_tracing.h"

#ifdef UPP_TRACING_OTEL
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"
#endif

namespace upp::tracing {
namespace {

TEST(TracingOptionsTest, TheEndpointIsTheFilesElseOpenTelemetrysVariable) {
  unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
  unetrpp::v1::Tracing config;
  EXPECT_EQ(OptionsFromConfig(config)->endpoint, "");  // off
  setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability:4317", 1);
  EXPECT_EQ(OptionsFromConfig(config)->endpoint, "http://otel-collector.observability:4317");
  setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces-only:4317", 1);
  EXPECT_EQ(OptionsFromConfig(config)->endpoint, "http://traces-only:4317");
  config.set_endpoint("collector-in-the-file:4317");
  EXPECT_EQ(OptionsFromConfig(config)->endpoint, "collector-in-the-file:4317");
  unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
}

#ifdef UPP_TRACING_OTEL

namespace otlp = opentelemetry::proto::collector::trace::v1;

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

// A collector on loopback: keeps every span it is sent.
class Receiver final : public otlp::TraceService::Service {
 public:
  struct Received {
    std::string name, trace_id, span_id, parent_span_id;
    int kind = 0;
    uint64_t start = 0, end = 0;
    std::vector<std::string> attributes;
    std::vector<std::string> links;  // "<trace id>-<span id>"
  };

  Receiver() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~Receiver() override { server_->Shutdown(); }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

  grpc::Status Export(grpc::ServerContext*, const otlp::ExportTraceServiceRequest* request,
                      otlp::ExportTraceServiceResponse*) override {
    absl::MutexLock lock(&mu_);
    for (const auto& resource : request->resource_spans()) {
      for (const auto& a : resource.resource().attributes())
        resource_attributes_.push_back(a.key() + "=" + a.value().string_value());
      for (const auto& scope : resource.scope_spans()) {
        for (const auto& s : scope.spans()) {
          Received r{s.name(), Hex(s.trace_id()),        Hex(s.span_id()),       Hex(s.parent_span_id()),
                     s.kind(), s.start_time_unix_nano(), s.end_time_unix_nano(), {}};
          for (const auto& a : s.attributes()) r.attributes.push_back(a.key());
          for (const auto& l : s.links()) r.links.push_back(Hex(l.trace_id()) + "-" + Hex(l.span_id()));
          spans_.push_back(std::move(r));
        }
      }
    }
    return grpc::Status::OK;
  }

  // The spans received once there are `n`, or what came within 10 s.
  std::vector<Received> WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return spans_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
    return spans_;
  }
  std::vector<std::string> resource_attributes() {
    absl::MutexLock lock(&mu_);
    return resource_attributes_;
  }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  std::vector<Received> spans_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> resource_attributes_ ABSL_GUARDED_BY(mu_);
};

constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kCallerSpan[] = "00f067aa0ba902b7";

TracingOptions Options(const std::string& endpoint) {
  TracingOptions options;
  options.endpoint = endpoint;
  options.schedule_delay = absl::Milliseconds(50);
  options.export_timeout = absl::Seconds(2);
  options.service_version = "test";
  options.resource_attributes = {{"k8s.pod.name", "pod-0"}};
  return options;
}

TEST(TracingTest, ASpanReachesTheCollectorWithTheCallersTraceId) {
  ASSERT_TRUE(Available());
  Receiver receiver;
  auto tracer = Tracer::Create(Options(receiver.endpoint()));
  ASSERT_TRUE(tracer.ok()) << tracer.status();
  std::string server_span_id;
  {
    Span segment = (*tracer)->StartServerSpan("Segment", std::string("00-") + kTraceId + "-" + kCallerSpan + "-01",
                                              "vendor=value");
    ASSERT_TRUE(segment.recording());
    EXPECT_EQ(segment.TraceId(), kTraceId);
    EXPECT_EQ(segment.TraceParent(), std::string("00-") + kTraceId + "-" + segment.SpanId() + "-01");
    server_span_id = segment.SpanId();
    segment.SetAttribute("upp.model", "phantom-ct");
    segment.SetAttribute("upp.voxels", int64_t{2097152});
    Span decode = segment.StartChild("decode");
    decode.SetAttribute("upp.input_bytes", int64_t{1024});
    decode.End();
    segment.SetStatus(absl::OkStatus());
  }  // ended here
  ASSERT_TRUE((*tracer)->ForceFlush(absl::Seconds(5)));

  auto spans = receiver.WaitFor(2);
  ASSERT_EQ(spans.size(), 2u);
  const auto& decode = spans[0].name == "decode" ? spans[0] : spans[1];
  const auto& segment = spans[0].name == "decode" ? spans[1] : spans[0];
  EXPECT_EQ(segment.name, "Segment");
  EXPECT_EQ(segment.trace_id, kTraceId);
  EXPECT_EQ(segment.parent_span_id, kCallerSpan);
  EXPECT_EQ(segment.span_id, server_span_id);
  EXPECT_EQ(segment.kind, opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(decode.trace_id, kTraceId);
  EXPECT_EQ(decode.parent_span_id, segment.span_id);
  EXPECT_GE(decode.start, segment.start);
  EXPECT_LE(decode.end, segment.end);
  EXPECT_EQ(segment.attributes, (std::vector<std::string>{"upp.model", "upp.voxels"}));
  auto resource = receiver.resource_attributes();
  for (const char* a : {"service.name=unetrpp-serve", "service.version=test", "k8s.pod.name=pod-0"})
    EXPECT_NE(std::find(resource.begin(), resource.end(), a), resource.end()) << a;
}

TEST(TracingTest, SpansRecordedAfterTheFactKeepExactlyTheirTimes) {
  Receiver receiver;
  auto tracer = Tracer::Create(Options(receiver.endpoint()));
  ASSERT_TRUE(tracer.ok()) << tracer.status();
  const absl::Time t0 = absl::Now() - absl::Seconds(2);
  {
    Span segment = (*tracer)->StartServerSpan("Segment", "", "", t0);
    segment.StartChild("decode", t0 + absl::Milliseconds(100)).End(t0 + absl::Milliseconds(300));
    segment.StartChild("encode", t0 + absl::Milliseconds(400)).End(t0 + absl::Milliseconds(400));
    segment.End(t0 + absl::Milliseconds(500));
  }
  ASSERT_TRUE((*tracer)->ForceFlush(absl::Seconds(5)));
  auto spans = receiver.WaitFor(3);
  ASSERT_EQ(spans.size(), 3u);
  const auto ns = [&](int ms) { return static_cast<uint64_t>(absl::ToUnixNanos(t0 + absl::Milliseconds(ms))); };
  for (const auto& span : spans) {
    if (span.name == "Segment") {
      EXPECT_EQ(span.start, ns(0));
      EXPECT_EQ(span.end, ns(500));
    } else if (span.name == "decode") {
      EXPECT_EQ(span.start, ns(100));
      EXPECT_EQ(span.end, ns(300));
    } else {
      EXPECT_EQ(span.name, "encode");
      EXPECT_EQ(span.start, ns(400));
      EXPECT_EQ(span.end, ns(400));
    }
  }
}

TEST(TracingTest, ALinkedSpanIsARootLinkedToTheSpansItServedAndSampledWithThem) {
  Receiver receiver;
  TracingOptions options = Options(receiver.endpoint());
  options.sampling_ratio = 0;  // new traces are not sampled, unless linked to a sampled span
  auto tracer = Tracer::Create(options);
  ASSERT_TRUE(tracer.ok()) << tracer.status();
  const std::string other_trace = "0af7651916cd43dd8448eb211c80319c";
  Span a = (*tracer)->StartServerSpan("Segment", std::string("00-") + kTraceId + "-" + kCallerSpan + "-01");
  Span b = (*tracer)->StartServerSpan("Segment", "00-" + other_trace + "-b7ad6b7169203331-01");
  Span unsampled = (*tracer)->StartServerSpan("Segment", "00-" + other_trace + "-b7ad6b7169203332-00");
  ASSERT_TRUE(a.recording() && b.recording());
  {
    Span alone = (*tracer)->StartLinkedSpan("batch", {unsampled.TraceParent(), "garbage"});
    EXPECT_FALSE(alone.recording());  // linked to nothing sampled: the ratio (0) decides
  }
  std::string batch_trace;
  {
    Span batch = (*tracer)->StartLinkedSpan("batch", {a.TraceParent(), "not a traceparent", b.TraceParent()});
    ASSERT_TRUE(batch.recording());
    batch_trace = batch.TraceId();
    batch.SetAttribute("upp.batch_size", int64_t{4});
  }
  const std::string a_id = a.SpanId(), b_id = b.SpanId();
  a.End();
  b.End();
  unsampled.End();
  ASSERT_TRUE((*tracer)->ForceFlush(absl::Seconds(5)));
  auto spans = receiver.WaitFor(3);
  ASSERT_EQ(spans.size(), 3u);
  const auto batch = std::find_if(spans.begin(), spans.end(), [](const auto& s) { return s.name == "batch"; });
  ASSERT_NE(batch, spans.end());
  EXPECT_EQ(batch->trace_id, batch_trace);
  EXPECT_NE(batch->trace_id, kTraceId);  // a trace of its own: it belongs to both
  EXPECT_NE(batch->trace_id, other_trace);
  EXPECT_EQ(batch->parent_span_id, "");
  EXPECT_EQ(batch->links, (std::vector<std::string>{std::string(kTraceId) + "-" + a_id, other_trace + "-" + b_id}));
}

TEST(TracingTest, WithoutAValidTraceparentASpanStartsANewTrace) {
  Receiver receiver;
  auto tracer = Tracer::Create(Options(receiver.endpoint()));
  ASSERT_TRUE(tracer.ok()) << tracer.status();
  for (const char* bad : {"", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage",
                          "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}) {
    Span span = (*tracer)->StartServerSpan("Segment", bad);
    EXPECT_TRUE(span.recording()) << bad;
    EXPECT_EQ(span.TraceId().size(), 32u) << bad;
    EXPECT_NE(span.TraceId(), kTraceId) << bad;
  }
}

TEST(TracingTest, ACallerThatDidNotSampleIsNotRecorded) {
  Receiver receiver;
  auto tracer = Tracer::Create(Options(receiver.endpoint()));
  ASSERT_TRUE(tracer.ok());
  Span span = (*tracer)->StartServerSpan("Segment", std::string("00-") + kTraceId + "-" + kCallerSpan + "-00");
  EXPECT_FALSE(span.recording());
  EXPECT_EQ(span.TraceId(), kTraceId);  // still propagated, for the log line
}

TEST(TracingTest, AnUnreachableCollectorCostsSpansNotTheCaller) {
  // A port nothing listens on; a queue of 16: 10 000 spans are dropped
  // beyond it rather than held, and nothing blocks the caller.
  TracingOptions options = Options("127.0.0.1:1");
  options.queue_size = 16;
  options.export_timeout = absl::Milliseconds(200);
  auto tracer = Tracer::Create(options);
  ASSERT_TRUE(tracer.ok());
  const absl::Time start = absl::Now();
  for (int i = 0; i < 10000; ++i) {
    Span span = (*tracer)->StartServerSpan("Segment", "");
    span.StartChild("decode").End();
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  tracer->reset();  // flushes what it can within export_timeout, then stops
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

// This process's resident memory, in bytes.
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST(TracingTest, ACollectorThatNeverAnswersCostsBoundedMemory) {
  // A collector that takes the connection and never answers (hung, or a
  // proxy in front of a dead one): each export waits its whole timeout
  // while requests keep ending spans. The queue of 256 drops the rest: 100 000
  // spans carrying 2 KiB each (over 200 MB if they were kept) leave the
  // process's memory where it was, give or take 32 MiB.
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(listener, 16), 0);  // the kernel completes the handshake; nobody reads
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  TracingOptions options = Options("127.0.0.1:" + std::to_string(ntohs(address.sin_port)));
  options.queue_size = 256;
  options.export_timeout = absl::Milliseconds(500);
  auto tracer = Tracer::Create(options);
  ASSERT_TRUE(tracer.ok());
  const std::string payload(2048, 'x');
  auto end_spans = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Span span = (*tracer)->StartServerSpan("Segment", "");
      span.SetAttribute("upp.payload", payload);
      span.StartChild("decode").End();
    }
  };
  end_spans(2000);  // the queue full, the allocator warm
  const int64_t before = ResidentBytes();
  const absl::Time start = absl::Now();
  end_spans(100000);
  EXPECT_LT(ResidentBytes() - before, int64_t{32} << 20);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));  // nothing waited for the collector
  tracer->reset();
  close(listener);
}

TEST(TracingTest, BadOptionsAreRefused) {
  TracingOptions options = Options("");
  EXPECT_FALSE(Tracer::Create(options).ok());
  options = Options("127.0.0.1:1");
  options.sampling_ratio = 1.5;
  EXPECT_FALSE(Tracer::Create(options).ok());
  options = Options("127.0.0.1:1");
  options.queue_size = 0;
  EXPECT_FALSE(Tracer::Create(options).ok());
}

#else

TEST(TracingTest, WithoutTheSdkTracingSaysItIsOff) {
  EXPECT_FALSE(Available());
  TracingOptions options;
  options.endpoint = "127.0.0.1:4317";
  EXPECT_EQ(Tracer::Create(options).status().code(), absl::StatusCode::kFailedPrecondition);
  Span span;
  EXPECT_FALSE(span.recording());
  EXPECT_EQ(span.StartChild("x").TraceId(), "");
}

#endif  // UPP_TRACING_OTEL

}  // namespace
}  // namespace upp::tracing
