"""unetrpp-dicom-gateway by DICOMweb against Debian's Orthanc and its
DICOMweb plugin (orthanc-dicomweb), on loopback.

Orthanc has the gateway as a DICOMweb server entry (with the gateway's API
key as a bearer token) and pushes a phantom CT series to it by STOW-RS; the
gateway segments it and sends the SEG and the volume report back by STOW-RS
to Orthanc's /dicom-web; both are then found by QIDO-RS and the SEG's
labels are checked against the phantom's truth (Dice, as the C-STORE test
does). Also: Orthanc with a wrong token is refused (401) and nothing is
spooled; a body over dicomweb.max_request_bytes from Orthanc is refused
(413) with nothing left in the spool, and the gateway still serves.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients"))
from server_process import ServerProcess, free_port  # noqa: E402
from test_gateway_orthanc import (  # noqa: E402
    GatewayWithOrthanc, Orthanc, check_seg_against_truth, make_variant, wait_for)

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
KEY = "orthanc-stow-key-31"


def files_under(directory):
    return sum(len(files) for _, _, files in os.walk(directory))


class GatewayDicomWebTest(GatewayWithOrthanc, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upp-gateway-web-")
        cls.phantom = os.path.join(cls.tmp, "phantom")
        cls.truth = os.path.join(cls.tmp, "truth.nii.gz")
        subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "31", "-o", os.path.join(cls.tmp, "ct.nii.gz"),
                        "--labels", cls.truth, "--dicom", cls.phantom], check=True, capture_output=True)
        cls.server_port = free_port()
        cls.server = ServerProcess(port=cls.server_port).__enter__()
        cls.dicom_port, cls.web_port, cls.metrics_port = free_port(), free_port(), free_port()
        gateway_url = f"http://127.0.0.1:{cls.web_port}/"
        cls.orthanc = Orthanc(cls.tmp, cls.dicom_port, extra={
            "Plugins": [PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {
                "gateway": {"Url": gateway_url, "HttpHeaders": {"Authorization": f"Bearer {KEY}"}},
                "gateway-wrong-token": {"Url": gateway_url, "HttpHeaders": {"Authorization": "Bearer wrong"}},
            }}})
        keys = os.path.join(cls.tmp, "keys")
        with open(keys, "w") as f:
            f.write(f"orthanc {hashlib.sha256(KEY.encode()).hexdigest()} store\n")
        cls.spool = os.path.join(cls.tmp, "spool")
        cls.config = os.path.join(cls.tmp, "gateway.textproto")
        with open(cls.config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {cls.dicom_port} allowed_calling_aes: "ORTHANC" }}
dicomweb {{ port: {cls.web_port} address: "127.0.0.1" auth {{ api_keys_file: "{keys}" }} }}
spool_dir: "{cls.spool}"
quiet_period_seconds: 2
service {{ target: "127.0.0.1:{cls.server_port}" deadline_seconds: 300 }}
destination {{ dicomweb {{ url: "http://127.0.0.1:{cls.orthanc.http_port}/dicom-web" }} }}
rules {{ name: "abdomen-ct" modalities: "CT" body_parts: "*abdomen*" min_instances: 10 orientations: "axial" }}
unmatched: "keep"
max_attempts: 20
retry_backoff_seconds: 1
metrics_address: "127.0.0.1:{cls.metrics_port}"
""")
        cls.gateway_log = open(os.path.join(cls.tmp, "gateway.log"), "wb")
        cls.gateway = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", cls.config], stdout=cls.gateway_log,
                                       stderr=subprocess.STDOUT)
        wait_for(lambda: cls.metric("upp_gateway_queued_series") is not None, 30, "the gateway's metrics")

    def stow_from_orthanc(self, name, server="gateway"):
        """A new variant of the phantom uploaded to Orthanc and pushed to the
        gateway by Orthanc's STOW-RS client. Returns (directory, study,
        series, Orthanc's answer or the HTTPError)."""
        directory = os.path.join(self.tmp, name)
        study, series = make_variant(self.phantom, directory)
        series_id = self.orthanc.upload_series(directory)
        try:
            answer = self.orthanc.request("POST", f"/dicom-web/servers/{server}/stow",
                                          {"Resources": [series_id], "Synchronous": True})
        except urllib.error.HTTPError as e:
            answer = e
        return directory, study, series, answer

    def qido_series(self, study):
        """{modality: series UID} of the study, by Orthanc's QIDO-RS."""
        found = self.orthanc.get(f"/dicom-web/studies/{study}/series")
        return {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0] for s in found}

    def test_1_stow_in_seg_and_sr_back_by_stow_found_by_qido(self):
        directory, study, series_uid, answer = self.stow_from_orthanc("happy")
        self.assertNotIsInstance(answer, urllib.error.HTTPError, self.gateway_output())
        n = len(os.listdir(directory))
        self.assertGreaterEqual(self.metric("upp_gateway_dicomweb_instances_total", outcome="stored"), n)
        found = wait_for(lambda: (lambda s: s if "SEG" in s and "SR" in s else None)(self.qido_series(study)), 300,
                         "a SEG and an SR found by QIDO-RS\n" + self.gateway_output())
        # The SEG by WADO-RS would need a multipart reader here; Orthanc's
        # REST API gives the same instance.
        seg_series = self.orthanc.request("POST", "/tools/find", {"Level": "Series", "Expand": True, "Query": {
            "SeriesInstanceUID": found["SEG"]}})[0]
        seg_path = os.path.join(self.tmp, "seg.dcm")
        with open(seg_path, "wb") as f:
            f.write(self.orthanc.first_instance(seg_series))
        seg = pydicom.dcmread(seg_path)
        self.assertEqual(seg.StudyInstanceUID, study)
        self.assertEqual(seg.ReferencedSeriesSequence[0].SeriesInstanceUID, series_uid)
        check_seg_against_truth(self, seg, directory, self.truth, self.server_port)
        self.assertGreaterEqual(self.metric("upp_gateway_dicomweb_requests_total", code="200"), 1)
        self.assertGreaterEqual(self.metric("upp_gateway_series_total", outcome="completed"), 1)
        self.assertIn("dicomweb: STOW-RS from 127.0.0.1: HTTP 200", self.gateway_output())

    def test_2_a_wrong_token_is_refused_and_nothing_is_spooled(self):
        before = self.metric("upp_gateway_dicomweb_requests_total", code="401")
        self.stow_from_orthanc("wrong-token", server="gateway-wrong-token")
        self.assertGreater(self.metric("upp_gateway_dicomweb_requests_total", code="401"), before)
        self.assertEqual(files_under(os.path.join(self.spool, "incoming")), 0)

    def test_3_refusals_by_http_leave_the_gateway_serving(self):
        url = f"http://127.0.0.1:{self.web_port}/studies"
        boundary = "b31"
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nnot DICOM\r\n--{boundary}--\r\n").encode()

        def post(headers, data=body):
            request = urllib.request.Request(url, data=data, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        typed = f'multipart/related; type="application/dicom"; boundary={boundary}'
        auth = {"Authorization": f"Bearer {KEY}"}
        status, answer = post({**auth, "Content-Type": typed})
        self.assertEqual(status, 409)  # the only part is not DICOM: FailedSOPSequence, 0xC000
        self.assertEqual(json.loads(answer)["00081198"]["Value"][0]["00081197"]["Value"], [0xC000])
        self.assertEqual(post({"Content-Type": typed})[0], 401)
        self.assertEqual(post({**auth, "Content-Type": 'multipart/related; type="application/dicom"'})[0], 400)
        self.assertEqual(files_under(os.path.join(self.spool, "incoming")), 0)
        # Still serving: a series by STOW-RS from Orthanc is stored.
        _, _, _, answer = self.stow_from_orthanc("after-refusals")
        self.assertNotIsInstance(answer, urllib.error.HTTPError, self.gateway_output())


if __name__ == "__main__":
    unittest.main()
