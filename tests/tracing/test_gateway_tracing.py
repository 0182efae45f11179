"""unetrpp-dicom-gateway's trace per series, through the server, to one collector.

A phantom CT series with a planted patient and planted UIDs is sent to the
gateway with storescu; the gateway has the server segment it and sends SEG
and report to a storescp. Gateway and server export to the same OTLP
collector (otlp_collector.py). The series must be ONE trace: the
gateway's root span "Series" with its children receive, wait (for the
series to be judged complete), segment, build and send, in that order and
within it (otlp_collector.check_series_trace), and the server's "Segment"
span a child of the gateway's "segment" span, within its times; the
gateway's log names the trace id; no span holds the planted patient, a UID,
an AE title of the sender or a file name. With the collector unreachable,
the series is still answered.
"""
import glob
import os
import subprocess
import tempfile
import time
import unittest
import urllib.request

from otlp_collector import Collector, attribute_values, check_series_trace, uncovered_seconds
from server_process import ServerProcess, free_port
from test_server_tracing import PATIENT, PATIENT_ID, UID_ROOT, planted_dicom

SENDER_AE = "PLANTEDPACS"


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metrics_up(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5):
            return True
    except OSError:
        return False


class GatewayTracingTest(unittest.TestCase):
    def send_series(self, tmp, series, server, tracing, processes):
        """Starts a storescp and the gateway (with `tracing`), sends `series`
        with storescu; returns storescp's folder and the gateway's log path."""
        received = os.path.join(tmp, "received")
        os.makedirs(received)
        dest_port, gateway_port, metrics_port = free_port(), free_port(), free_port()
        processes.append(subprocess.Popen(["storescp", "-aet", "DEST", "-od", received, str(dest_port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        config = os.path.join(tmp, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {gateway_port} allowed_calling_aes: "{SENDER_AE}" }}
spool_dir: "{os.path.join(tmp, 'spool')}"
quiet_period_seconds: 1
service {{ target: "{server.address}" deadline_seconds: 300 }}
destination {{ host: "127.0.0.1" port: {dest_port} ae_title: "DEST" }}
rules {{ name: "ct" modalities: "CT" }}
metrics_address: "127.0.0.1:{metrics_port}"
{tracing}""")
        log_path = os.path.join(tmp, "gateway.log")
        with open(log_path, "wb") as log:
            processes.append(subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", config], stdout=log,
                                              stderr=subprocess.STDOUT))
        wait_for(lambda: metrics_up(metrics_port), 30, "the gateway's metrics")
        sent = subprocess.run(["storescu", "-aet", SENDER_AE, "-aec", "UNETRPP", "127.0.0.1",
                               str(gateway_port), *sorted(glob.glob(os.path.join(series, "*")))],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(sent.returncode, 0, sent.stdout + sent.stderr)
        return received, log_path

    def stop(self, processes):
        for p in processes:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def test_a_series_is_one_trace_from_the_gateway_through_the_server(self):
        collector = Collector()
        tmp = tempfile.TemporaryDirectory()
        processes = []
        try:
            series = planted_dicom(tmp.name)
            tracing = collector.config()
            with ServerProcess(config_text=tracing) as server:
                received, log_path = self.send_series(tmp.name, series, server, tracing, processes)
                roots = collector.wait_for(lambda s: s.name == "Series", timeout=300)
                with open(log_path) as f:
                    gateway_log = f.read()
                self.assertEqual(len(roots), 1, gateway_log[-3000:])
                collector.wait_for(lambda s: s.name == "Segment" and s.trace_id == roots[0].trace_id)
                time.sleep(0.5)  # the rest of the gateway's and the server's spans
                with collector.lock:
                    spans = list(collector.spans)
            # SEG and report arrived.
            self.assertEqual(len(os.listdir(received)), 2, os.listdir(received))

            root = roots[0]
            values = attribute_values(root)
            self.assertEqual(values["upp.outcome"], "completed")
            self.assertEqual(values["upp.instances"], len(glob.glob(os.path.join(series, "*"))))
            self.assertGreater(values["upp.bytes"], 0)
            children = check_series_trace(self, spans, root)
            # The quiet period (1 s) is inside the wait, and little of the
            # Series span is left unexplained by its children.
            wait = children["wait"]
            self.assertGreaterEqual(wait.end_time_unix_nano - wait.start_time_unix_nano, 0.9e9)
            self.assertLess(uncovered_seconds(root, children.values()), 0.5)
            self.assertIn(f"trace_id={root.trace_id.hex()}", gateway_log)
            # Nothing about the patient, the study or the sender, in any span exported.
            for span in spans:
                text = str(span)
                for secret in (PATIENT, PATIENT_ID, UID_ROOT, "Doe", SENDER_AE, ".dcm", tmp.name):
                    self.assertNotIn(secret, text, span.name)
        finally:
            self.stop(processes)
            collector.stop()
            tmp.cleanup()

    def test_an_unreachable_collector_costs_no_series(self):
        # Gateway and server export to a port where nothing listens, each
        # export timing out after 0.5 s: the series is still answered.
        tmp = tempfile.TemporaryDirectory()
        processes = []
        try:
            series = planted_dicom(tmp.name)
            tracing = 'tracing { endpoint: "127.0.0.1:1" schedule_delay_seconds: 0.1 export_timeout_seconds: 0.5 }\n'
            with ServerProcess(config_text=tracing) as server:
                received, log_path = self.send_series(tmp.name, series, server, tracing, processes)
                wait_for(lambda: len(os.listdir(received)) == 2, 120, "SEG and report at storescp")
            with open(log_path) as f:
                gateway_log = f.read()
            self.assertIn("tracing: OTLP to 127.0.0.1:1", gateway_log)
            self.assertRegex(gateway_log, r"series \S+: attempt 1 trace_id=[0-9a-f]{32}")
            self.assertIn("SEG and report sent", gateway_log)
        finally:
            self.stop(processes)
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
