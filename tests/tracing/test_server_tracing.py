"""unetrpp-serve's spans against an OTLP collector on loopback.

The collector is a gRPC TraceService of the test (otlp_collector.py,
python3-opentelemetry-proto's stubs). A request carrying a W3C traceparent
must give one server span "Segment" in the caller's trace, child of the
caller's span, with the request's counts and none of what the caller sent
about the patient; a child span for each stage, within the request's times;
and batch spans linked to the request. The request's log line and its audit
record carry the trace id. The clients send the trace context (upp-client
--traceparent or $TRACEPARENT, the Python client's traceparent= or
$TRACEPARENT). With the collector unreachable, requests still succeed.
"""
import glob
import json
import os
import subprocess
import tempfile
import time
import unittest

import nibabel
import numpy
import pydicom
from otlp_collector import Collector, attribute_values
from server_process import ServerProcess
from unetrpp_client import Client, RequestError

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PATIENT = "Doe^Planted"
PATIENT_ID = "PID-Planted-4711"
UID_ROOT = "1.2.826.0.1.3680043.99.4711"  # the planted study, series and instance UIDs start so
# Every stage of a request, as the server names its child spans (docs/server.md Tracing).
STAGES = ("admission", "receive", "decode", "preprocess", "queue_wait", "inference", "stitch", "back_resample",
          "encode", "send")


def small_ct(path):
    img = nibabel.Nifti1Image(numpy.full((40, 40, 12), -100, dtype=numpy.int16), numpy.diag([2.0, 2.0, 4.0, 1.0]))
    img.header["descrip"] = PATIENT.encode()  # a sender's free text: must reach no span
    nibabel.save(img, path)
    return path


def planted_dicom(folder):
    """A phantom CT series whose patient and UIDs are planted values."""
    subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "3", "--spacing", "2", "2", "5", "--fov", "120", "120",
                    "60", "-o", os.path.join(folder, "phantom.nii.gz"), "--dicom", os.path.join(folder, "series")],
                   check=True, capture_output=True)
    for i, path in enumerate(sorted(glob.glob(os.path.join(folder, "series", "*")))):
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT
        ds.PatientID = PATIENT_ID
        ds.StudyInstanceUID = f"{UID_ROOT}.1"
        ds.SeriesInstanceUID = f"{UID_ROOT}.2"
        ds.SOPInstanceUID = f"{UID_ROOT}.3.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)
    return os.path.join(folder, "series")


def everything_said(span):
    """All that a span exports about itself, as text (names, attributes, links)."""
    return str(span)


class ServerTracingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ct = small_ct(os.path.join(cls.tmp.name, "ct.nii.gz"))
        cls.series = planted_dicom(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def segment(self, server, traceparent):
        with Client(server.address) as client:
            return client.segment([self.ct], outputs=["raw"], client_request_id="my-secret-id",
                                  traceparent=traceparent, tracestate="vendor=1")

    def test_a_request_is_a_span_in_the_callers_trace(self):
        collector = Collector()
        audit_path = os.path.join(self.tmp.name, "audit.jsonl")
        try:
            config = (f'tracing {{ endpoint: "127.0.0.1:{collector.port}" schedule_delay_seconds: 0.1 }}\n'
                      f'auth {{ audit_log_file: "{audit_path}" }}\n')
            with ServerProcess(config_text=config) as server:
                result = self.segment(server, f"00-{TRACE_ID}-{CALLER_SPAN}-01")
                self.assertGreater(result.summary.voxels, 0)
                spans = collector.wait_for(lambda s: s.name == "Segment")
                time.sleep(0.2)  # the log line is written as the span ends
                log = server.output()
            # The call's audit record names the trace too.
            with open(audit_path) as f:
                audit = [json.loads(line) for line in f if '"method"' in line]
            segments = [r for r in audit if r.get("method", "").endswith("Segment")]
            self.assertEqual(len(segments), 1, audit)
            self.assertEqual(segments[0].get("trace_id"), TRACE_ID, segments[0])
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

    def test_every_stage_is_a_child_within_the_request_and_batches_link_to_it(self):
        collector = Collector()
        try:
            config = f'tracing {{ endpoint: "127.0.0.1:{collector.port}" schedule_delay_seconds: 0.1 }}\n'
            with ServerProcess(config_text=config) as server:
                with Client(server.address) as client:
                    result = client.segment(self.series, dicom=True, outputs=["seg", "raw"],
                                            traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01")
                self.assertGreater(result.summary.voxels, 0)
                segment = collector.wait_for(lambda s: s.name == "Segment")
                self.assertEqual(len(segment), 1, segment)
                segment = segment[0]
                mine = lambda s: any(l.span_id == segment.span_id for l in s.links)  # noqa: E731
                batches = collector.wait_for(lambda s: s.name == "batch" and mine(s))
                with collector.lock:
                    spans = list(collector.spans)
            self.assertEqual(segment.trace_id.hex(), TRACE_ID)
            self.assertEqual(segment.parent_span_id.hex(), CALLER_SPAN)
            children = [s for s in spans if s.parent_span_id == segment.span_id]
            self.assertEqual(sorted(s.name for s in children), sorted(STAGES))
            for child in children:
                self.assertEqual(child.trace_id.hex(), TRACE_ID, child.name)
                self.assertGreaterEqual(child.start_time_unix_nano, segment.start_time_unix_nano, child.name)
                self.assertLessEqual(child.start_time_unix_nano, child.end_time_unix_nano, child.name)
                self.assertLessEqual(child.end_time_unix_nano, segment.end_time_unix_nano, child.name)
            # The stages in the order they ran (stitching runs beside inference).
            start = {s.name: s.start_time_unix_nano for s in children}
            end = {s.name: s.end_time_unix_nano for s in children}
            for before, after in (("admission", "receive"), ("receive", "decode"), ("decode", "preprocess"),
                                  ("preprocess", "queue_wait"), ("queue_wait", "inference"),
                                  ("inference", "back_resample"), ("back_resample", "encode"), ("encode", "send")):
                self.assertLessEqual(end[before], start[after], (before, after))
            # The batches that carried its windows: traces of their own, linked to the request's span.
            self.assertGreater(len(batches), 0)
            for batch in batches:
                self.assertNotEqual(batch.trace_id.hex(), TRACE_ID)
                self.assertIn(TRACE_ID, [l.trace_id.hex() for l in batch.links])
                values = attribute_values(batch)
                self.assertEqual(values["upp.model"], "phantom-ct")
                self.assertGreater(values["upp.batch_size"], 0)
            self.assertEqual(sum(attribute_values(b)["upp.batch_size"] for b in batches),
                             attribute_values(segment)["upp.windows"])
            # Nothing about the patient or the study, in any span exported.
            for span in spans:
                text = everything_said(span)
                for secret in (PATIENT, PATIENT_ID, UID_ROOT, "Doe"):
                    self.assertNotIn(secret, text, span.name)
        finally:
            collector.server.stop(0)

    def test_an_unsampled_request_makes_no_span_and_no_batch_span(self):
        collector = Collector()
        unsampled = "5bf92f3577b34da6a3ce929d0e0e4736"
        try:
            config = f'tracing {{ endpoint: "127.0.0.1:{collector.port}" schedule_delay_seconds: 0.1 }}\n'
            with ServerProcess(config_text=config) as server:
                self.segment(server, f"00-{unsampled}-{CALLER_SPAN}-00")  # flags 00: the caller does not sample
                # A sampled request after it: once its batches arrive, the unsampled one's would have too.
                self.segment(server, f"00-{TRACE_ID}-{CALLER_SPAN}-01")
                segment = collector.wait_for(lambda s: s.name == "Segment" and s.trace_id.hex() == TRACE_ID)
                self.assertEqual(len(segment), 1, segment)
                mine = lambda s: any(l.span_id == segment[0].span_id for l in s.links)  # noqa: E731
                self.assertGreater(len(collector.wait_for(lambda s: s.name == "batch" and mine(s))), 0)
                with collector.lock:
                    spans = list(collector.spans)
            for span in spans:
                self.assertNotEqual(span.trace_id.hex(), unsampled, span.name)
                self.assertNotIn(unsampled, [l.trace_id.hex() for l in span.links], span.name)
            # Every batch span exported carried the sampled request's windows only.
            for span in spans:
                if span.name == "batch":
                    self.assertTrue(mine(span), span)
        finally:
            collector.server.stop(0)

    def test_the_clients_send_the_trace_context(self):
        collector = Collector()
        traces = {"upp-client --traceparent": "0af7651916cd43dd8448eb211c80319c",
                  "upp-client $TRACEPARENT": "0af7651916cd43dd8448eb211c80319d",
                  "python traceparent=": "0af7651916cd43dd8448eb211c80319e",
                  "python $TRACEPARENT": "0af7651916cd43dd8448eb211c80319f"}
        try:
            config = f'tracing {{ endpoint: "127.0.0.1:{collector.port}" schedule_delay_seconds: 0.1 }}\n'
            with ServerProcess(config_text=config) as server:
                upp_client = [os.environ["UPP_CLIENT"], "--server", server.address, "segment", self.ct,
                              "-o", os.path.join(self.tmp.name, "labels.nii.gz")]
                environment = dict(os.environ)
                environment.pop("TRACEPARENT", None)
                subprocess.run(upp_client + ["--traceparent", f"00-{traces['upp-client --traceparent']}-{CALLER_SPAN}-01"],
                               check=True, capture_output=True, env=environment)
                subprocess.run(upp_client, check=True, capture_output=True,
                               env=dict(environment, TRACEPARENT=f"00-{traces['upp-client $TRACEPARENT']}-{CALLER_SPAN}-01"))
                bad = subprocess.run(upp_client + ["--traceparent", "00-nothex-01"], capture_output=True, text=True,
                                     env=environment)
                self.assertNotEqual(bad.returncode, 0)
                self.assertIn("traceparent", bad.stderr)
                with Client(server.address) as client:
                    client.segment([self.ct], outputs=["raw"],
                                   traceparent=f"00-{traces['python traceparent=']}-{CALLER_SPAN}-01")
                    os.environ["TRACEPARENT"] = f"00-{traces['python $TRACEPARENT']}-{CALLER_SPAN}-01"
                    try:
                        client.segment([self.ct], outputs=["raw"])
                    finally:
                        del os.environ["TRACEPARENT"]
                    with self.assertRaises(RequestError):
                        client.segment([self.ct], outputs=["raw"], traceparent="00-" + "0" * 32 + "-" + "1" * 16 + "-01")
                for how, trace in traces.items():
                    spans = collector.wait_for(lambda s: s.name == "Segment" and s.trace_id.hex() == trace)
                    self.assertEqual(len(spans), 1, how)
                    self.assertEqual(spans[0].parent_span_id.hex(), CALLER_SPAN, how)
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
