"""unetrpp-serve's Segment span against an OTLP collector on loopback.

The collector is a gRPC TraceService of this test (python3-opentelemetry-
proto's stubs). A request carrying a W3C traceparent must give one server
span "Segment" in the caller's trace, child of the caller's span, with the
request's counts and none of what the caller sent about the patient; the
request's log line carries the trace id. With the collector unreachable,
requests still succeed.
"""
import os
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc
import nibabel
import numpy
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from server_process import ServerProcess, free_port
from unetrpp_client import Client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PATIENT = "Doe^Planted"


class Collector(otlp_grpc.TraceServiceServicer):
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


def small_ct(path):
    img = nibabel.Nifti1Image(numpy.full((40, 40, 12), -100, dtype=numpy.int16), numpy.diag([2.0, 2.0, 4.0, 1.0]))
    img.header["descrip"] = PATIENT.encode()  # a sender's free text: must reach no span
    nibabel.save(img, path)
    return path


def attribute_values(span):
    values = {}
    for a in span.attributes:
        v = a.value
        values[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return values


class ServerTracingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ct = small_ct(os.path.join(cls.tmp.name, "ct.nii.gz"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def segment(self, server, traceparent):
        with Client(server.address) as client:
            client._metadata = (("traceparent", traceparent), ("tracestate", "vendor=1"))
            return client.segment([self.ct], outputs=["raw"], client_request_id="my-secret-id")

    def test_a_request_is_a_span_in_the_callers_trace(self):
        collector = Collector()
        try:
            config = f'tracing {{ endpoint: "127.0.0.1:{collector.port}" schedule_delay_seconds: 0.1 }}\n'
            with ServerProcess(config_text=config) as server:
                result = self.segment(server, f"00-{TRACE_ID}-{CALLER_SPAN}-01")
                self.assertGreater(result.summary.voxels, 0)
                spans = collector.wait_for(lambda s: s.name == "Segment")
                time.sleep(0.2)  # the log line is written as the span ends
                log = server.output()
            self.assertEqual(len(spans), 1, spans)
            span = spans[0]
            self.assertEqual(span.trace_id.hex(), TRACE_ID)
            self.assertEqual(span.parent_span_id.hex(), CALLER_SPAN)
            self.assertEqual(span.kind, span.SPAN_KIND_SERVER)
            self.assertLessEqual(span.start_time_unix_nano, span.end_time_unix_nano)
            attributes = attribute_values(span)
            self.assertEqual(attributes["upp.model"], "phantom-ct")
            self.assertEqual(attributes["upp.voxels"], 40 * 40 * 12)
            self.assertGreater(attributes["upp.windows"], 0)
            self.assertEqual(attributes["rpc.grpc.status_code"], 0)
            text = str(span)
            for secret in (PATIENT, "my-secret-id", self.ct, "ct.nii.gz"):
                self.assertNotIn(secret, text)
            self.assertRegex(log, rf"request \S+ client_id=my-secret-id .* status=OK trace_id={TRACE_ID}")
        finally:
            collector.server.stop(0)

    def test_an_unreachable_collector_costs_no_request(self):
        config = 'tracing { endpoint: "127.0.0.1:1" schedule_delay_seconds: 0.1 export_timeout_seconds: 0.5 }\n'
        with ServerProcess(config_text=config) as server:
            for i in range(3):
                result = self.segment(server, f"00-{TRACE_ID}-{CALLER_SPAN}-01")
                self.assertGreater(result.summary.voxels, 0)
            self.assertIn(f"trace_id={TRACE_ID}", server.output())

    def test_tracing_is_off_by_default(self):
        with ServerProcess() as server:
            self.segment(server, f"00-{TRACE_ID}-{CALLER_SPAN}-01")
            time.sleep(0.2)
            self.assertNotIn("trace_id=", server.output())


if __name__ == "__main__":
    unittest.main()
