"""unetrpp-dicom-gateway against a real PACS: Debian's Orthanc on loopback.

Orthanc (generated configuration, its own ports and storage) sends phantom
CT series to the gateway with C-STORE; the gateway has the segmentation
server (default model) segment them and sends a DICOM SEG and a TID 1500
volume report back to Orthanc. Checked through Orthanc's REST API and
pydicom: references, Dice against the phantom's truth, the report's
volumes against the server's own, dciodvfy. Also: a series that matches no
rule, a series with slices missing, the server down for a while, SIGTERM
while a series is in flight. Where tracing is built in ($UPP_TRACE_TEST,
set by CMake), server and gateway export to a loopback OTLP collector
(tests/tracing/otlp_collector.py), and the happy series must be one trace
from its C-STORE to the SEG's delivery back to Orthanc.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import nibabel
import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tracing"))  # otlp_collector, when tracing
from server_process import ServerProcess, free_port  # noqa: E402

VOLUME_CODE = "118565006"       # SCT "Volume"
TRACKING_ID_CODE = "112039"     # DCM "Tracking Identifier"
PATIENT, PATIENT_ID = "Doe^Planted", "PID-Planted-4711"  # the happy series' patient: no span may hold them


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_metric(port, name, **labels):
    """The sum of the gateway's series `name` with these labels; 0.0 for a
    family without them, None when the endpoint does not answer or lacks it."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total = (total or 0.0) + float(value)
    return total if total is not None else (0.0 if f"# TYPE {name}" in text else None)


class Orthanc:
    """Orthanc from Debian with a generated configuration, on free loopback ports."""

    def __init__(self, root, gateway_port, tls=None, extra=None, verbose=False):
        self.http_port, self.dicom_port = free_port(), free_port()
        os.makedirs(root, exist_ok=True)
        config = {
            "Name": "upp-gateway-test", "StorageDirectory": os.path.join(root, "db"),
            "IndexDirectory": os.path.join(root, "db"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [],
            "DicomModalities": {"gateway": ["UNETRPP", "127.0.0.1", gateway_port]},
            "DicomAlwaysAllowStore": True, "DicomCheckModalityHost": False, "StableAge": 1,
        }
        if tls:  # DICOM TLS both ways: Orthanc's server and its sends to the gateway
            config.update({"DicomTlsEnabled": True, "DicomTlsCertificate": tls["cert"],
                           "DicomTlsPrivateKey": tls["key"], "DicomTlsTrustedCertificates": tls["ca"],
                           "DicomTlsRemoteCertificateRequired": True,
                           "DicomModalities": {"gateway": {"AET": "UNETRPP", "Host": "127.0.0.1",
                                                           "Port": gateway_port, "UseDicomTls": True}}})
        config.update(extra or {})  # e.g. the DICOMweb plugin and its servers
        self.config_path = os.path.join(root, "orthanc.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.log = open(os.path.join(root, "orthanc.log"), "wb")
        # verbose: its log has a line, to the microsecond, per C-STORE it receives.
        self.process = subprocess.Popen(["Orthanc", *(["--verbose"] if verbose else []), self.config_path],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._up, 60, "Orthanc's REST API")

    def _up(self):
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def request(self, method, path, body=None, raw=False):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=300) as r:
            content = r.read()
        return content if raw else json.loads(content)

    def get(self, path, raw=False):
        return self.request("GET", path, raw=raw)

    def upload_series(self, directory):
        """Uploads every file; returns Orthanc's series ID."""
        series = None
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                series = self.request("POST", "/instances", f.read())["ParentSeries"]
        return series

    def send_to_gateway(self, series_id):
        self.request("POST", "/modalities/gateway/store", {"Resources": [series_id], "Synchronous": True})

    def series_of_study(self, study_uid):
        found = self.request("POST", "/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": study_uid},
                                                      "Expand": True})
        return {s["MainDicomTags"].get("Modality"): s for s in found}

    def first_instance(self, series):
        return self.get(f"/instances/{series['Instances'][0]}/file", raw=True)

    def stores_received(self, calling_ae):
        """When each C-STORE from `calling_ae` arrived (seconds since the
        epoch), from the log of a verbose Orthanc: "I1205 06:56:50.845059
        main.cpp:352] Incoming Store request from AET ..." (local time)."""
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            found = re.findall(rf"^I(\d{{4}}) (\d\d:\d\d:\d\d)(\.\d+) .*Incoming Store request from AET "
                               rf"{calling_ae} ", f.read(), re.MULTILINE)
        year = time.localtime().tm_year
        return [time.mktime(time.strptime(f"{year}{day} {hms}", "%Y%m%d %H:%M:%S")) + float(fraction)
                for day, hms, fraction in found]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def make_variant(source_dir, out_dir, drop_slices=(), body_part=None, patient=None):
    """The phantom series as a new study and series (new UIDs), optionally
    with slices left out, another BodyPartExamined or patient (name, ID)."""
    os.makedirs(out_dir)
    study, series = generate_uid(), generate_uid()
    files = sorted(os.listdir(source_dir))
    for i, name in enumerate(files):
        if i in drop_slices:
            continue
        ds = pydicom.dcmread(os.path.join(source_dir, name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if body_part is not None:
            ds.BodyPartExamined = body_part
        if patient is not None:
            ds.PatientName, ds.PatientID = patient
        ds.save_as(os.path.join(out_dir, name))
    return study, series


def seg_label_map(seg, source_positions, rows, cols):
    """Label volume (slice, row, col) on the source grid from a binary SEG."""
    labels = np.zeros((len(source_positions), rows, cols), np.uint16)
    number_to_value = {s.SegmentNumber: s.SegmentNumber for s in seg.SegmentSequence}
    frames = seg.pixel_array.reshape(-1, rows, cols)
    for f, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        pos = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        distances = np.linalg.norm(source_positions - pos, axis=1)
        k = int(np.argmin(distances))
        assert distances[k] < 0.01, f"a SEG frame at {pos} lies on no source slice"
        labels[k][frames[f] > 0] = number_to_value[number]
    return labels


def truth_on_dicom_grid(truth_path, slices):
    """The phantom's truth (NIfTI, RAS) sampled at every DICOM pixel centre (LPS)."""
    img = nibabel.load(truth_path)
    data = np.asarray(img.dataobj)
    inverse = np.linalg.inv(img.affine)
    out = np.zeros((len(slices), slices[0].Rows, slices[0].Columns), np.uint16)
    for k, ds in enumerate(slices):
        row_dir = np.array(ds.ImageOrientationPatient[:3], float)
        col_dir = np.array(ds.ImageOrientationPatient[3:], float)
        dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
        j, i = np.mgrid[0:ds.Rows, 0:ds.Columns]
        lps = (np.array(ds.ImagePositionPatient, float)[None, None, :] + i[..., None] * dc * row_dir
               + j[..., None] * dr * col_dir)
        ras = lps * np.array([-1.0, -1.0, 1.0])
        vox = np.rint(ras @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        inside = np.all((vox >= 0) & (vox < np.array(data.shape[:3])), axis=-1)
        v = vox[inside]
        out[k][inside] = data[v[:, 0], v[:, 1], v[:, 2]]
    return out


def check_seg_against_truth(test, seg, directory, truth_path, server_port):
    """The SEG's labels on the source series `directory` against the
    phantom's truth: mean Dice >= 0.8 through the segment names the server
    gives its labels. Returns ({segment number: name}, the server's own
    result for the series)."""
    source = sorted((pydicom.dcmread(os.path.join(directory, n)) for n in os.listdir(directory)),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in source])
    labels = seg_label_map(seg, positions, source[0].Rows, source[0].Columns)
    names = {s.SegmentNumber: s.SegmentLabel for s in seg.SegmentSequence}
    truth = truth_on_dicom_grid(truth_path, source)
    sys.path.insert(0, os.path.join(os.environ["UPP_BUILD"], "python"))
    from unetrpp_client import Client
    with Client(f"127.0.0.1:{server_port}") as client:
        from_server = client.segment([os.path.join(directory, n) for n in sorted(os.listdir(directory))],
                                     dicom=True, outputs=["raw"])
        truth_names = {l.value: l.name for l in from_server.header.labels}
    dice = []
    for number, name in names.items():
        value = next(v for v, n in truth_names.items() if n == name)
        a, b = labels == number, truth == value
        dice.append(2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))
    test.assertGreaterEqual(float(np.mean(dice)), 0.8, dict(zip(names.values(), dice)))
    return names, from_server


def report_volumes(sr):
    """{tracking identifier: volume} from a TID 1500 report."""
    volumes = {}

    def walk(items, tracking=None):
        for item in items:
            code = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else None
            if code == TRACKING_ID_CODE:
                tracking = item.TextValue
            if code == VOLUME_CODE and item.ValueType == "NUM":
                volumes[tracking] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                tracking_here = tracking
                for child in item.ContentSequence:
                    if child.get("ConceptNameCodeSequence") and \
                            child.ConceptNameCodeSequence[0].CodeValue == TRACKING_ID_CODE:
                        tracking_here = child.TextValue
                walk(item.ContentSequence, tracking_here)

    walk(sr.ContentSequence)
    return volumes


def dciodvfy_errors(path):
    run = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


class GatewayWithOrthanc:
    """What the suites that run a service, Orthanc and the gateway share: the
    gateway's metrics, its log, and stopping all three (setUpClass sets
    tmp, server, orthanc, gateway, gateway_log and metrics_port)."""

    @classmethod
    def metric(cls, name, **labels):
        return read_metric(cls.metrics_port, name, **labels)

    @classmethod
    def tearDownClass(cls):
        if cls.gateway.poll() is None:
            cls.gateway.send_signal(signal.SIGTERM)
            cls.gateway.wait(timeout=120)
        cls.gateway_log.close()
        cls.orthanc.stop()
        cls.server.__exit__(None, None, None)
        if getattr(cls, "collector", None) is not None:  # after them: their last export reaches it
            cls.collector.stop()
        if os.environ.get("UPP_KEEP_TEST_OUTPUT"):
            print("gateway test output kept in", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def gateway_output(self):
        with open(os.path.join(self.tmp, "gateway.log"), "rb") as f:
            return f.read().decode(errors="replace")


class GatewayOrthancTest(GatewayWithOrthanc, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upp-gateway-")
        cls.phantom = os.path.join(cls.tmp, "phantom")
        cls.truth = os.path.join(cls.tmp, "truth.nii.gz")
        subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "31",
                        "-o", os.path.join(cls.tmp, "ct.nii.gz"), "--labels", cls.truth, "--dicom", cls.phantom],
                       check=True, capture_output=True)
        cls.server_port = free_port()
        cls.collector = None
        if os.environ.get("UPP_TRACE_TEST") == "1":
            from otlp_collector import Collector
            cls.collector = Collector()
        cls.server = cls.start_server()
        cls.gateway_port, cls.metrics_port = free_port(), free_port()
        cls.orthanc = Orthanc(cls.tmp, cls.gateway_port, verbose=True)
        cls.spool = os.path.join(cls.tmp, "spool")
        cls.config = os.path.join(cls.tmp, "gateway.textproto")
        with open(cls.config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {cls.gateway_port} allowed_calling_aes: "ORTHANC" }}
spool_dir: "{cls.spool}"
quiet_period_seconds: 2
service {{ target: "127.0.0.1:{cls.server_port}" deadline_seconds: 300 }}
destination {{ host: "127.0.0.1" port: {cls.orthanc.dicom_port} ae_title: "ORTHANC" }}
rules {{ name: "abdomen-ct" modalities: "CT" body_parts: "*abdomen*" min_instances: 10 orientations: "axial" }}
unmatched: "keep"
max_attempts: 20
retry_backoff_seconds: 1
metrics_address: "127.0.0.1:{cls.metrics_port}"
{cls.tracing_config()}""")
        cls.gateway_log = open(os.path.join(cls.tmp, "gateway.log"), "wb")
        cls.gateway = cls.start_gateway()

    @classmethod
    def tracing_config(cls):
        return cls.collector.config() if cls.collector else ""

    @classmethod
    def start_server(cls):
        return ServerProcess(port=cls.server_port, config_text=cls.tracing_config() or None).__enter__()

    @classmethod
    def start_gateway(cls):
        process = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", cls.config], stdout=cls.gateway_log,
                                   stderr=subprocess.STDOUT)
        wait_for(lambda: cls.metric("upp_gateway_queued_series") is not None, 30, "the gateway's metrics")
        return process

    def send_variant(self, name, **kwargs):
        directory = os.path.join(self.tmp, name)
        study, series = make_variant(self.phantom, directory, **kwargs)
        self.orthanc.send_to_gateway(self.orthanc.upload_series(directory))
        return directory, study, series

    def wait_for_results(self, study, timeout=300):
        return wait_for(lambda: (lambda s: s if "SEG" in s and "SR" in s else None)(self.orthanc.series_of_study(study)),
                        timeout, "a SEG and an SR in Orthanc\n" + self.gateway_output())

    def test_1_series_comes_back_with_seg_and_volume_report(self):
        before = self.collector.snapshot() if self.collector else []
        directory, study, series_uid = self.send_variant("happy", patient=(PATIENT, PATIENT_ID))
        results = self.wait_for_results(study)
        type(self).happy = (before, directory, study, series_uid, results)
        seg_bytes = self.orthanc.first_instance(results["SEG"])
        sr_bytes = self.orthanc.first_instance(results["SR"])
        seg_path, sr_path = os.path.join(self.tmp, "seg.dcm"), os.path.join(self.tmp, "sr.dcm")
        for path, data in ((seg_path, seg_bytes), (sr_path, sr_bytes)):
            with open(path, "wb") as f:
                f.write(data)
        seg, sr = pydicom.dcmread(seg_path), pydicom.dcmread(sr_path)

        # The SEG refers to the source series and lies on its slices.
        self.assertEqual(seg.StudyInstanceUID, study)
        self.assertEqual(seg.ReferencedSeriesSequence[0].SeriesInstanceUID, series_uid)
        names, from_server = check_seg_against_truth(self, seg, directory, self.truth, self.server_port)

        # The report's volumes are the server's, for every segment of the SEG.
        self.assertEqual(sr.StudyInstanceUID, study)
        self.assertEqual(sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                         .ReferencedSOPSequence[0].ReferencedSOPInstanceUID, seg.SOPInstanceUID)
        volumes = report_volumes(sr)
        server_volumes = from_server.volumes()
        self.assertEqual(set(volumes), set(names.values()))
        for name, volume in volumes.items():
            self.assertAlmostEqual(volume, server_volumes[name]["volume_ml"], delta=0.001, msg=name)

        for path in (seg_path, sr_path):
            self.assertEqual(dciodvfy_errors(path), [], path)
        self.check_seg_with_dcmjs(seg_path, directory, seg, series_uid)
        self.assertGreaterEqual(self.metric("upp_gateway_series_total", outcome="completed"), 1)
        self.assertGreaterEqual(self.metric("upp_gateway_series_received_total"), 1)
        self.assertGreaterEqual(self.metric("upp_gateway_instances_received_total", outcome="stored"),
                                len(os.listdir(directory)))

    def test_1a_the_series_is_one_trace_from_c_store_to_seg_delivery(self):
        if not self.collector:
            self.skipTest("tracing is not built in (UPP_TRACE_TEST is not 1)")
        from otlp_collector import attribute_values, check_series_trace
        before, directory, study, series_uid, results = self.happy
        known = {s.span_id for s in before}
        new_roots = lambda: [s for s in self.collector.snapshot()  # noqa: E731
                             if s.name == "Series" and s.span_id not in known]
        # The Series span ends once both results are sent; it is exported within 0.1 s.
        wait_for(new_roots, 30, "the Series span\n" + self.gateway_output())
        time.sleep(0.5)  # the server's spans and the gateway's last ones
        roots, spans = new_roots(), self.collector.snapshot()
        # Exactly one trace for the one series Orthanc sent.
        self.assertEqual(len(roots), 1, [attribute_values(r) for r in roots])
        root = roots[0]
        values = attribute_values(root)
        self.assertEqual(values["upp.outcome"], "completed")
        self.assertEqual(values["upp.attempt"], 1)
        self.assertEqual(values["upp.instances"], len(os.listdir(directory)))
        children = check_series_trace(self, spans, root, transport="c-store", objects=2)
        self.assertIn(f"trace_id={root.trace_id.hex()}", self.gateway_output())
        # The send span covers the delivery: Orthanc received SEG and report
        # (the C-STOREs from the gateway's AE, as its log times them) between
        # the span's start and end.
        send = children["send"]
        stores = self.orthanc.stores_received("UNETRPP")
        self.assertEqual(len(stores), 2, stores)
        for at in stores:
            self.assertLessEqual(send.start_time_unix_nano / 1e9, at)
            self.assertLessEqual(at, send.end_time_unix_nano / 1e9)
        # Nothing about the patient, the study, the sender or the files in any span.
        secrets = [PATIENT, PATIENT_ID, "Doe", study, series_uid, "ORTHANC", self.tmp]
        secrets += [pydicom.dcmread(os.path.join(directory, n), stop_before_pixels=True).SOPInstanceUID
                    for n in os.listdir(directory)]
        for span in spans:
            text = str(span)
            for secret in secrets:
                self.assertNotIn(secret, text, span.name)

    def check_seg_with_dcmjs(self, seg_path, source_dir, seg, series_uid):
        """A third reader, the one OHIF uses: the same segments, frames and
        positions as pydicom sees, every frame on a source slice."""
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dcmjs")
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=here, check=True,
                       capture_output=True)
        run = subprocess.run(["node", os.path.join(here, "check_seg.js"), seg_path, source_dir], check=True,
                             capture_output=True, text=True)
        seen = json.loads(run.stdout)
        self.assertEqual([(s["number"], s["label"]) for s in seen["segments"]],
                         [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence])
        per_segment = {}
        for group in seg.PerFrameFunctionalGroupsSequence:
            number = str(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            per_segment[number] = per_segment.get(number, 0) + 1
        self.assertEqual(seen["frames_per_segment"], per_segment)
        self.assertEqual(len(per_segment), len(seg.SegmentSequence))  # no empty segment
        self.assertEqual(seen["number_of_frames"], sum(per_segment.values()))
        self.assertEqual(seen["frames_off_slice"], 0)
        self.assertEqual(seen["unknown_references"], 0)
        self.assertEqual(seen["referenced_series"], [series_uid])

    def test_2_series_matching_no_rule_is_kept_and_not_answered(self):
        before = self.metric("upp_gateway_series_total", outcome="unmatched")
        _, study, _ = self.send_variant("head", body_part="HEAD")
        wait_for(lambda: self.metric("upp_gateway_series_total", outcome="unmatched") > before, 60,
                 "the unmatched series")
        self.assertEqual(set(self.orthanc.series_of_study(study)), {"CT"})
        self.assertTrue(os.listdir(os.path.join(self.spool, "unmatched")))
        self.assertIn("matched no rule", self.gateway_output())

    def test_3_series_with_slices_missing_fails_clearly_and_sends_nothing(self):
        before = self.metric("upp_gateway_series_total", outcome="failed")
        _, study, _ = self.send_variant("cut", drop_slices=(20, 21, 22))
        wait_for(lambda: self.metric("upp_gateway_series_total", outcome="failed") > before, 120, "the failure")
        self.assertEqual(set(self.orthanc.series_of_study(study)), {"CT"})
        self.assertRegex(self.gateway_output(), r"failed after 1 attempt\(s\), nothing sent: .*(gap|spacing|missing)")
        failed = os.listdir(os.path.join(self.spool, "failed"))
        self.assertTrue(failed)

    def test_4_server_down_for_a_while_gateway_retries_and_succeeds(self):
        type(self).server.__exit__(None, None, None)
        before = self.metric("upp_gateway_series_total", outcome="retried")
        _, study, _ = self.send_variant("retry")
        wait_for(lambda: self.metric("upp_gateway_series_total", outcome="retried") > before, 120, "a retry")
        type(self).server = self.start_server()
        self.wait_for_results(study)

    def test_5_sigterm_finishes_the_series_in_flight(self):
        _, study, _ = self.send_variant("sigterm")
        active = os.path.join(self.spool, "active")
        wait_for(lambda: os.listdir(active), 60, "the series to be claimed")
        self.gateway.send_signal(signal.SIGTERM)
        self.assertEqual(self.gateway.wait(timeout=300), 0, self.gateway_output())
        self.wait_for_results(study, timeout=30)
        self.assertEqual(os.listdir(active), [])
        type(self).gateway = self.start_gateway()  # for tearDownClass


def make_certificates(root):
    """A CA and two leaf certificates (gateway, orthanc) signed by it."""
    os.makedirs(root, exist_ok=True)
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=root)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=test DICOM CA", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt")
    paths = {"ca": os.path.join(root, "ca.crt")}
    for name in ("gateway", "orthanc"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt")
        paths[name] = {"cert": os.path.join(root, f"{name}.crt"), "key": os.path.join(root, f"{name}.key"),
                       "ca": paths["ca"]}
    return paths


def secured_server(root):
    """unetrpp-serve with TLS (self-signed for localhost) and a required API
    key; returns (server, its certificate, a file holding the key)."""
    cert, key = os.path.join(root, "server.pem"), os.path.join(root, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    token = "gateway-key-7c2d"
    keys, token_file = os.path.join(root, "keys.txt"), os.path.join(root, "token")
    with open(keys, "w") as f:
        f.write(f"gateway {hashlib.sha256(token.encode()).hexdigest()} user\n")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    config = (f"tls {{ cert_file: '{cert}' key_file: '{key}' }}\n"
              f"auth {{ required: true api_keys_file: '{keys}' }}\n")
    server = ServerProcess(config_text=config, client_kwargs={"tls_ca": cert, "server_name": "localhost",
                                                              "token": token}).__enter__()
    return server, cert, token_file


class GatewayTlsTest(unittest.TestCase):
    """DICOM TLS both ways: Orthanc sends over TLS with its certificate, the
    gateway requires one signed by the CA and sends the results over TLS; and
    the gateway reaches a server that requires TLS and an API key."""

    def test_series_over_tls_comes_back_over_tls_and_plain_dicom_is_refused(self):
        tmp = tempfile.mkdtemp(prefix="upp-gateway-tls-")
        try:
            certs = make_certificates(os.path.join(tmp, "tls"))
            phantom = os.path.join(tmp, "phantom")
            subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "32", "--dicom", phantom,
                            "-o", os.path.join(tmp, "ct.nii.gz")], check=True, capture_output=True)
            gateway_port, metrics_port = free_port(), free_port()
            orthanc = Orthanc(os.path.join(tmp, "orthanc"), gateway_port, tls=certs["orthanc"])
            server, server_cert, token_file = secured_server(tmp)
            config = os.path.join(tmp, "gateway.textproto")
            g = certs["gateway"]
            with open(config, "w") as f:
                f.write(f"""
listener {{ ae_title: "UNETRPP" port: {gateway_port}
           tls {{ cert_file: "{g['cert']}" key_file: "{g['key']}" ca_file: "{g['ca']}" }} }}
spool_dir: "{os.path.join(tmp, 'spool')}"
quiet_period_seconds: 2
service {{ target: "{server.address}" tls_ca_file: "{server_cert}" server_name: "localhost"
          token_file: "{token_file}" }}
destination {{ host: "127.0.0.1" port: {orthanc.dicom_port} ae_title: "ORTHANC"
              tls {{ cert_file: "{g['cert']}" key_file: "{g['key']}" ca_file: "{g['ca']}" }} }}
rules {{ name: "ct" modalities: "CT" }}
metrics_address: "127.0.0.1:{metrics_port}"
""")
            log = open(os.path.join(tmp, "gateway.log"), "wb")
            gateway = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", config], stdout=log,
                                       stderr=subprocess.STDOUT)
            try:
                time.sleep(1)
                # Plain DICOM to the TLS port: no association, nothing stored.
                plain = subprocess.run(["storescu", "-aec", "UNETRPP", "127.0.0.1", str(gateway_port),
                                        os.path.join(phantom, sorted(os.listdir(phantom))[0])],
                                       capture_output=True, text=True, timeout=60)
                self.assertNotEqual(plain.returncode, 0, plain.stdout + plain.stderr)
                study, _ = make_variant(phantom, os.path.join(tmp, "series"))
                orthanc.send_to_gateway(orthanc.upload_series(os.path.join(tmp, "series")))
                try:
                    wait_for(lambda: (lambda s: "SEG" in s and "SR" in s)(orthanc.series_of_study(study)), 300,
                             "a SEG and an SR over TLS")
                except AssertionError:
                    with open(os.path.join(tmp, "gateway.log"), "rb") as g_log, \
                            open(os.path.join(tmp, "orthanc", "orthanc.log"), "rb") as o_log:
                        raise AssertionError("no SEG and SR over TLS; gateway:\n" + g_log.read().decode()[-3000:]
                                             + "\nOrthanc:\n" + o_log.read().decode()[-3000:])
            finally:
                gateway.send_signal(signal.SIGTERM)
                self.assertEqual(gateway.wait(timeout=120), 0)
                log.close()
                orthanc.stop()
                server.__exit__(None, None, None)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class GatewayLimitsTest(unittest.TestCase):
    """What a sender cannot do to the gateway's disk and slots: an instance
    over max_instance_bytes is cut off while it arrives (the association
    aborted, nothing left in the spool); while the spool's file system is
    short of room every C-STORE is answered "out of resources" with nothing
    written; an association ends after max_association_seconds. The gateway
    keeps answering each time."""

    def run_gateway(self, tmp, listener_extra):
        port, metrics_port = free_port(), free_port()
        os.makedirs(tmp, exist_ok=True)
        config = os.path.join(tmp, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {port} {listener_extra} }}
spool_dir: "{os.path.join(tmp, 'spool')}"
service {{ target: "127.0.0.1:{free_port()}" }}
destination {{ host: "127.0.0.1" port: {free_port()} ae_title: "NOBODY" }}
rules {{ name: "ct" modalities: "CT" }}
metrics_address: "127.0.0.1:{metrics_port}"
""")
        log = open(os.path.join(tmp, "gateway.log"), "wb")
        process = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", config], stdout=log,
                                   stderr=subprocess.STDOUT)
        self.addCleanup(log.close)
        self.addCleanup(lambda: (process.send_signal(signal.SIGTERM), process.wait(timeout=60)))

        def metric(outcome):
            return read_metric(metrics_port, "upp_gateway_instances_received_total", outcome=outcome)
        wait_for(lambda: read_metric(metrics_port, "upp_gateway_queued_series") is not None, 30, "the gateway's metrics")
        return port, metric

    def spooled_files(self, tmp):
        return [os.path.join(d, n) for d, _, names in os.walk(os.path.join(tmp, "spool")) for n in names
                if not n.startswith("state")]

    def test_oversized_instances_a_full_spool_and_endless_associations_are_stopped(self):
        tmp = tempfile.mkdtemp(prefix="upp-gateway-limits-")
        self.addCleanup(shutil.rmtree, tmp, True)
        phantom = os.path.join(tmp, "phantom")
        subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "5", "--dicom", phantom,
                        "-o", os.path.join(tmp, "ct.nii.gz")], check=True, capture_output=True)
        instance = os.path.join(phantom, sorted(os.listdir(phantom))[0])
        self.assertGreater(os.path.getsize(instance), 200000)

        limited = os.path.join(tmp, "limited")
        port, metric = self.run_gateway(limited, "max_instance_bytes: 100000")
        sent = subprocess.run(["storescu", "-aec", "UNETRPP", "127.0.0.1", str(port), instance],
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(sent.returncode, 0, sent.stdout + sent.stderr)
        # The gateway's abort, as storescu sees it: "Peer aborted", or, when it
        # was still writing the data set, the connection reset under it.
        self.assertRegex(sent.stdout + sent.stderr, "aborted|Connection reset by peer")
        wait_for(lambda: metric("too_large") == 1.0, 10, "the instance counted as too_large")
        self.assertEqual(self.spooled_files(limited), [])
        echo = subprocess.run(["echoscu", "-aec", "UNETRPP", "127.0.0.1", str(port)], capture_output=True, timeout=30)
        self.assertEqual(echo.returncode, 0)

        full = os.path.join(tmp, "full")  # asks for a petabyte free
        port, metric = self.run_gateway(full, "min_free_spool_bytes: 1000000000000000")
        sent = subprocess.run(["storescu", "-aec", "UNETRPP", "127.0.0.1", str(port), instance],
                              capture_output=True, text=True, timeout=60)
        self.assertNotEqual(sent.returncode, 0, sent.stdout + sent.stderr)
        wait_for(lambda: metric("spool_full") == 1.0, 10, "the instance counted as spool_full")
        self.assertEqual(metric("stored"), 0.0)
        self.assertEqual(self.spooled_files(full), [])

        # One association may last max_association_seconds, whatever it does.
        timed = os.path.join(tmp, "timed")
        port, metric = self.run_gateway(timed, "max_association_seconds: 1")
        start = time.time()
        sent = subprocess.run(["storescu", "-aec", "UNETRPP", "--repeat", "100000", "127.0.0.1", str(port), instance],
                              capture_output=True, text=True, timeout=120)
        self.assertNotEqual(sent.returncode, 0, sent.stdout + sent.stderr)
        # The gateway's abort, as storescu sees it: "Peer aborted", or, when it
        # was still writing the data set, the connection reset under it.
        self.assertRegex(sent.stdout + sent.stderr, "aborted|Connection reset by peer")
        self.assertLess(time.time() - start, 30)
        wait_for(lambda: metric("association_too_long") == 1.0, 10, "the association counted as too long")
        self.assertGreater(metric("stored"), 0.0)
        echo = subprocess.run(["echoscu", "-aec", "UNETRPP", "127.0.0.1", str(port)], capture_output=True, timeout=30)
        self.assertEqual(echo.returncode, 0)


if __name__ == "__main__":
    unittest.main()
