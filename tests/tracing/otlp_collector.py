"""A loopback OTLP trace collector, and the checks of a gateway's Series trace.

Shared by tests/tracing (the server's spans; the gateway's trace with
storescu/storescp) and tests/gateway/test_gateway_orthanc.py (the same trace
with Orthanc on both ends). The collector is a gRPC TraceService of the test
(python3-opentelemetry-proto's stubs, from bookworm-backports like the SDK).
"""
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from server_process import free_port

# The gateway's Series span's children, in the order they run
# (gateway/processor.h): the first attempt at a series.
SERIES_CHILDREN = ("receive", "wait", "segment", "build", "send")


class Collector(otlp_grpc.TraceServiceServicer):
    """Keeps every span exported to it (collector.spans, under collector.lock)."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Condition()
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        otlp_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def Export(self, request, context):
        with self.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
            self.lock.notify_all()
        return otlp.ExportTraceServiceResponse()

    def wait_for(self, predicate, timeout=20):
        with self.lock:
            self.lock.wait_for(lambda: any(predicate(s) for s in self.spans), timeout)
            return [s for s in self.spans if predicate(s)]

    def snapshot(self):
        with self.lock:
            return list(self.spans)

    def config(self):
        """The tracing block of a server's or gateway's configuration."""
        return f'tracing {{ endpoint: "127.0.0.1:{self.port}" schedule_delay_seconds: 0.1 }}\n'

    def stop(self):
        self.server.stop(0)


def attribute_values(span):
    values = {}
    for a in span.attributes:
        v = a.value
        values[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return values


def check_series_trace(test, spans, root, transport="c-store", objects=2):
    """Asserts that `root` (a gateway's Series span) and the spans of its
    trace among `spans` are one whole first attempt: its children receive,
    wait, segment, build and send, in that order, each within the root; the
    server's Segment span the child of the gateway's segment span; every
    span of the trace descending from the root. Returns {name: child}."""
    test.assertEqual(root.parent_span_id, b"")
    trace = [s for s in spans if s.trace_id == root.trace_id]
    by_id = {s.span_id: s for s in trace}
    children = {s.name: s for s in trace if s.parent_span_id == root.span_id}
    test.assertEqual(sorted(children), sorted(SERIES_CHILDREN))
    test.assertEqual(len([s for s in trace if s.parent_span_id == root.span_id]), len(SERIES_CHILDREN))
    for child in children.values():
        test.assertGreaterEqual(child.start_time_unix_nano, root.start_time_unix_nano, child.name)
        test.assertLessEqual(child.start_time_unix_nano, child.end_time_unix_nano, child.name)
        test.assertLessEqual(child.end_time_unix_nano, root.end_time_unix_nano, child.name)
    for before, after in zip(SERIES_CHILDREN, SERIES_CHILDREN[1:]):
        test.assertLessEqual(children[before].end_time_unix_nano, children[after].start_time_unix_nano,
                             (before, after))
    # The series' first instance starts the trace; the wait takes over where
    # the arrivals end: no gap between them.
    test.assertEqual(children["receive"].start_time_unix_nano, root.start_time_unix_nano)
    test.assertEqual(children["wait"].start_time_unix_nano, children["receive"].end_time_unix_nano)
    values = attribute_values(children["send"])
    test.assertEqual(values["upp.transport"], transport)
    test.assertEqual(values["upp.objects"], objects)
    # The server's Segment span: the gateway's segment span's child, so in this one trace.
    segments = [s for s in trace if s.name == "Segment"]
    test.assertEqual(len(segments), 1)
    test.assertEqual(segments[0].parent_span_id, children["segment"].span_id)
    # It starts within the call; it may end a little after the gateway has
    # its answer (the server ends its span once the last message is sent).
    test.assertGreaterEqual(segments[0].start_time_unix_nano, children["segment"].start_time_unix_nano)
    test.assertLessEqual(segments[0].start_time_unix_nano, children["segment"].end_time_unix_nano)
    # Every span of the trace descends from the gateway's Series span.
    for span in trace:
        node = span
        while node.parent_span_id:
            node = by_id[node.parent_span_id]
        test.assertEqual(node.span_id, root.span_id, span.name)
    return children


def uncovered_seconds(root, children):
    """The time of `root` that none of `children` covers."""
    covered, reach = 0, root.start_time_unix_nano
    for c in sorted(children, key=lambda c: c.start_time_unix_nano):
        start, end = max(c.start_time_unix_nano, reach), min(c.end_time_unix_nano, root.end_time_unix_nano)
        if end > start:
            covered += end - start
            reach = end
    return (root.end_time_unix_nano - root.start_time_unix_nano - covered) / 1e9
