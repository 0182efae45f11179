"""unetrpp-dicom-gateway by DICOMweb against Debian's Orthanc and its
DICOMweb plugin (orthanc-dicomweb), on loopback.

Orthanc has the gateway as a DICOMweb server entry (with the gateway's API
key as a bearer token) and pushes a phantom CT series to it by STOW-RS; the
gateway segments it and sends the SEG and the volume report back by STOW-RS
to Orthanc's /dicom-web; both are then found by QIDO-RS and the SEG's
labels are checked against the phantom's truth (Dice, as the C-STORE test
does). Pull mode: POST /pull names a series that is in Orthanc; the gateway
fetches it by WADO-RS from Orthanc (a dicomweb.sources entry), and the SEG
and the report come back to Orthanc by STOW-RS. Refusals: Orthanc with a
wrong token (401), nothing spooled; a part that is not DICOM (409, C000); a
malformed boundary (400); a chunked body over dicomweb.max_request_bytes cut
off while it arrives (413), nothing left in the spool; the gateway still
serves after each. A second gateway serves HTTPS (a self-signed certificate
made here with openssl) with JWTs (HS256, verified by upp_auth) beside API
keys: a valid token stores, a forged or expired one is 401, one without
the role "store" is 403, plain HTTP and a client that does not trust the
certificate get nothing. The QIDO-RS poll: a third gateway searches Orthanc
every second (dicomweb.sources[].poll, filtered to one study); a series
uploaded to Orthanc only is found, pulled once, segmented, its SEG and SR
come back by STOW-RS, later searches pull nothing, and its log names no
UID and nothing of the patient's.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients"))
from server_process import ServerProcess, free_port  # noqa: E402
from test_gateway_orthanc import (  # noqa: E402
    GatewayWithOrthanc, Orthanc, check_seg_against_truth, make_variant, read_metric, wait_for)

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
KEY = "orthanc-stow-key-31"
PULL_KEY = "pull-key-31"
JWT_SECRET = b"a shared secret of the JWT issuer, 32+ bytes long"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt(claims, secret=JWT_SECRET):
    """A JWT signed with HMAC-SHA256 (RFC 7519), with the standard library."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "issuer-1"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def http_post(url, data, headers, context=None):
    """(status, body) of a POST; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def multipart_of_files(paths, boundary="upp31"):
    parts = []
    for path in paths:
        with open(path, "rb") as f:
            parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


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
        # Orthanc's STOW-RS of a series fits under dicomweb.max_request_bytes,
        # an endless body is cut off soon after it.
        series_bytes = sum(os.path.getsize(os.path.join(cls.phantom, n)) for n in os.listdir(cls.phantom))
        cls.max_request_bytes = 3 * series_bytes + (1 << 20)
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
            f.write(f"puller {hashlib.sha256(PULL_KEY.encode()).hexdigest()} pull\n")
        cls.spool = os.path.join(cls.tmp, "spool")
        cls.config = os.path.join(cls.tmp, "gateway.textproto")
        with open(cls.config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {cls.dicom_port} allowed_calling_aes: "ORTHANC" }}
dicomweb {{
  port: {cls.web_port} address: "127.0.0.1" auth {{ api_keys_file: "{keys}" }}
  max_request_bytes: {cls.max_request_bytes}
  sources {{ name: "orthanc" service {{ url: "http://127.0.0.1:{cls.orthanc.http_port}/dicom-web" }} }}
}}
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

    @classmethod
    def counter(cls, name, **labels):
        """A counter of the gateway's; 0.0 while it has not counted yet (its
        family is absent from /metrics until then: a test run alone, or
        first, reads that), so a test does not depend on the ones before."""
        value = cls.metric(name, **labels)
        if value is None:
            assert cls.metric("upp_gateway_queued_series") is not None, "the gateway's metrics do not answer"
            return 0.0
        return value

    def start_gateway(self, config, log_path):
        """A further gateway with `config`, its output to `log_path`, stopped
        when the test ends."""
        log = open(log_path, "wb")
        gateway = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", config], stdout=log,
                                   stderr=subprocess.STDOUT)

        def stop():
            gateway.terminate()
            gateway.wait(timeout=60)
            log.close()
        self.addCleanup(stop)

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
        before = self.counter("upp_gateway_dicomweb_requests_total", code="401")
        self.stow_from_orthanc("wrong-token", server="gateway-wrong-token")
        self.assertGreater(self.counter("upp_gateway_dicomweb_requests_total", code="401"), before)
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
        self.assertEqual(json.loads(answer)["00081190"], {"vr": "UR"})  # RetrieveURL: Type 2, empty (no retrieve here)
        self.assertEqual(post({"Content-Type": typed})[0], 401)
        self.assertEqual(post({**auth, "Content-Type": 'multipart/related; type="application/dicom"'})[0], 400)
        self.assertEqual(files_under(os.path.join(self.spool, "incoming")), 0)
        # Still serving: a series by STOW-RS from Orthanc is stored.
        _, _, _, answer = self.stow_from_orthanc("after-refusals")
        self.assertNotIsInstance(answer, urllib.error.HTTPError, self.gateway_output())


    def found_seg(self, study):
        """The SEG of `study` in Orthanc, once it and the SR are there."""
        found = wait_for(lambda: (lambda s: s if "SEG" in s and "SR" in s else None)(self.qido_series(study)), 300,
                         "a SEG and an SR found by QIDO-RS\n" + self.gateway_output())
        seg_series = self.orthanc.request("POST", "/tools/find", {"Level": "Series", "Expand": True, "Query": {
            "SeriesInstanceUID": found["SEG"]}})[0]
        path = os.path.join(self.tmp, f"seg-{study}.dcm")
        with open(path, "wb") as f:
            f.write(self.orthanc.first_instance(seg_series))
        return pydicom.dcmread(path)

    def pull(self, form, key=PULL_KEY):
        """POST /pull with its fields in the body (never in the URL: UIDs are patient data)."""
        return http_post(f"http://127.0.0.1:{self.web_port}/pull", urllib.parse.urlencode(form).encode(),
                         {"Authorization": f"Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"})

    def test_4_pull_by_wado_rs_from_orthanc_results_back(self):
        directory = os.path.join(self.tmp, "pulled")
        study, series_uid = make_variant(self.phantom, directory)
        self.orthanc.upload_series(directory)  # in Orthanc only: the gateway has never seen it
        n = len(os.listdir(directory))
        status, answer = self.pull({"source": "orthanc", "study": study, "series": series_uid})
        self.assertEqual(status, 200, answer[:500])
        self.assertEqual(len(json.loads(answer)["00081199"]["Value"]), n)
        self.assertEqual(self.metric("upp_gateway_dicomweb_instances_total", transport="wado-rs", outcome="stored"), n)
        seg = self.found_seg(study)
        self.assertEqual(seg.ReferencedSeriesSequence[0].SeriesInstanceUID, series_uid)
        log = self.gateway_output()
        self.assertIn("dicomweb: pull from source orthanc for 127.0.0.1: HTTP 200, %d instances stored" % n, log)
        self.assertNotIn(study, log)  # no UIDs (or anything of the patient's) in the log
        self.assertNotIn(series_uid, log)
        # Refusals: a key that may store but not pull; a source not configured;
        # a series Orthanc does not have. Nothing is spooled by them.
        query = {"source": "orthanc", "study": study, "series": series_uid}
        self.assertEqual(self.pull(query, key=KEY)[0], 403)
        self.assertEqual(self.pull({**query, "source": "elsewhere"})[0], 400)
        self.assertEqual(self.pull({**query, "series": generate_uid()})[0], 404)
        self.assertEqual(self.pull(query, key="wrong")[0], 401)
        in_url = http_post(f"http://127.0.0.1:{self.web_port}/pull?{urllib.parse.urlencode(query)}", b"",
                           {"Authorization": f"Bearer {PULL_KEY}"})
        self.assertEqual(in_url[0], 400, in_url[1])
        self.assertEqual(files_under(os.path.join(self.spool, "incoming")), 0)

    def test_5_a_body_over_the_limit_is_cut_off_while_it_arrives(self):
        before = self.counter("upp_gateway_dicomweb_requests_total", endpoint="studies", code="413")
        # Chunked (no length announced): one chunk announcing 4 times the
        # limit, of which a little more than the limit is sent.
        head = (f"POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                f'Content-Type: multipart/related; type="application/dicom"; boundary=b31\r\n'
                f"Transfer-Encoding: chunked\r\n\r\n{4 * self.max_request_bytes:x}\r\n"
                f"--b31\r\nContent-Type: application/dicom\r\n\r\n").encode()
        with open(os.path.join(self.phantom, sorted(os.listdir(self.phantom))[0]), "rb") as f:
            first = f.read()
        answer = b""
        with socket.create_connection(("127.0.0.1", self.web_port), timeout=60) as s:
            try:
                s.sendall(head + first)
                sent, piece = len(first), b"\0" * (1 << 16)
                while sent < self.max_request_bytes + (1 << 16):
                    s.sendall(piece)
                    sent += len(piece)
                while chunk := s.recv(65536):
                    answer += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass  # the gateway may close before the client has read all
        if answer:
            self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:200])
        wait_for(lambda: self.counter("upp_gateway_dicomweb_requests_total", endpoint="studies", code="413") > before,
                 30, "the 413 counted\n" + self.gateway_output())
        self.assertEqual(files_under(os.path.join(self.spool, "incoming")), 0)
        # Still serving: a request right after is answered (the part is not DICOM: 409).
        body = b"--b\r\nContent-Type: application/dicom\r\n\r\nnot DICOM\r\n--b--\r\n"
        status, _ = http_post(f"http://127.0.0.1:{self.web_port}/studies", body, {
            "Authorization": f"Bearer {KEY}", "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
        self.assertEqual(status, 409)

    def test_6_https_with_jwts_and_api_keys(self):
        tmp = os.path.join(self.tmp, "secure")
        os.makedirs(tmp)
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        jwks = os.path.join(tmp, "jwks.json")
        with open(jwks, "w") as f:
            json.dump({"keys": [{"kty": "oct", "kid": "issuer-1", "k": b64url(JWT_SECRET)}]}, f)
        keys = os.path.join(tmp, "keys")
        with open(keys, "w") as f:
            f.write(f"orthanc {hashlib.sha256(KEY.encode()).hexdigest()} store\n")
        web_port, metrics_port = free_port(), free_port()
        config = os.path.join(tmp, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {free_port()} allowed_calling_aes: "NOBODY" }}
dicomweb {{
  port: {web_port} address: "127.0.0.1" tls {{ cert_file: "{cert}" key_file: "{key}" }}
  auth {{ api_keys_file: "{keys}"
         jwt {{ jwks_file: "{jwks}" issuer: "https://issuer.test" audience: "upp-gateway" allow_hs256: true }} }}
}}
spool_dir: "{os.path.join(tmp, 'spool')}"
service {{ target: "127.0.0.1:{self.server_port}" }}
destination {{ dicomweb {{ url: "http://127.0.0.1:{self.orthanc.http_port}/dicom-web" }} }}
rules {{ name: "mr-only" modalities: "MR" }}
unmatched: "drop"
metrics_address: "127.0.0.1:{metrics_port}"
""")
        self.start_gateway(config, os.path.join(tmp, "gateway.log"))
        wait_for(lambda: read_metric(metrics_port, "upp_gateway_queued_series") is not None, 30, "the second gateway")
        trusted = ssl.create_default_context(cafile=cert)
        url = f"https://127.0.0.1:{web_port}/studies"
        body, media_type = multipart_of_files([os.path.join(self.phantom, sorted(os.listdir(self.phantom))[0])])
        now = int(time.time())
        claims = {"iss": "https://issuer.test", "aud": "upp-gateway", "sub": "pacs", "exp": now + 300,
                  "roles": ["store"]}

        def post(token, context=trusted, data=body):
            return http_post(url, data, {"Content-Type": media_type, "Authorization": f"Bearer {token}"}, context)[0]

        def refused(token):
            # A refusal comes before the body is read: a body the gateway
            # leaves unread could be reset under the answer, so a short one.
            return post(token, data=b"--upp31--\r\n")

        self.assertEqual(post(hs256_jwt(claims)), 200)
        self.assertEqual(post(KEY), 200)  # an API key beside JWTs
        self.assertEqual(refused(hs256_jwt(claims, secret=b"another secret, not the issuer's, 32 bytes")), 401)
        self.assertEqual(refused(hs256_jwt({**claims, "exp": now - 3600})), 401)
        self.assertEqual(refused(hs256_jwt({**claims, "aud": "someone-else"})), 401)
        self.assertEqual(refused(hs256_jwt({**claims, "roles": ["user"]})), 403)
        self.assertEqual(refused(hs256_jwt({**claims, "roles": ["pull"]})), 403)
        self.assertEqual(refused("wrong-key"), 401)
        with self.assertRaises(urllib.error.URLError):  # a client that does not trust the certificate
            post(hs256_jwt(claims), context=ssl.create_default_context())
        with self.assertRaises((OSError, http.client.HTTPException)):  # plain HTTP to the HTTPS port
            http_post(f"http://127.0.0.1:{web_port}/studies", body,
                      {"Content-Type": media_type, "Authorization": f"Bearer {KEY}"})
        self.assertEqual(post(hs256_jwt(claims)), 200)  # still serving
        self.assertEqual(read_metric(metrics_port, "upp_gateway_dicomweb_requests_total", code="200"), 3)
        self.assertEqual(read_metric(metrics_port, "upp_gateway_dicomweb_requests_total", code="401"), 4)
        self.assertEqual(read_metric(metrics_port, "upp_gateway_dicomweb_requests_total", code="403"), 2)
        self.assertEqual(files_under(os.path.join(tmp, "spool", "incoming")), 0)

    def test_7_a_qido_rs_poll_finds_pulls_once_and_sends_back(self):
        """A second gateway polls Orthanc by QIDO-RS every second (a filter
        naming one study, so the series of the other tests are not its
        business): a series uploaded to Orthanc only is found, pulled by
        WADO-RS once, segmented, its SEG and SR come back by STOW-RS; the
        searches after do not pull it again; the log names no UID and no
        patient."""
        tmp = os.path.join(self.tmp, "poll")
        os.makedirs(tmp)
        directory = os.path.join(tmp, "series")
        patient = ("POLL^PLANTED", "UPPPOLL31ID")
        study, series_uid = make_variant(self.phantom, directory, patient=patient)
        n = len(os.listdir(directory))
        metrics_port, spool = free_port(), os.path.join(tmp, "spool")
        config = os.path.join(tmp, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {free_port()} allowed_calling_aes: "NOBODY" }}
dicomweb {{
  port: {free_port()} address: "127.0.0.1" auth {{ api_keys_file: "{os.path.join(self.tmp, 'keys')}" }}
  sources {{ name: "orthanc" service {{ url: "http://127.0.0.1:{self.orthanc.http_port}/dicom-web" }}
            poll {{ interval_seconds: 1 query: "Modality=CT&StudyInstanceUID={study}" max_series: 10 }} }}
}}
spool_dir: "{spool}"
quiet_period_seconds: 1
service {{ target: "127.0.0.1:{self.server_port}" deadline_seconds: 300 }}
destination {{ dicomweb {{ url: "http://127.0.0.1:{self.orthanc.http_port}/dicom-web" }} }}
rules {{ name: "abdomen-ct" modalities: "CT" body_parts: "*abdomen*" min_instances: 10 orientations: "axial" }}
unmatched: "keep"
retry_backoff_seconds: 1
metrics_address: "127.0.0.1:{metrics_port}"
""")
        log_path = os.path.join(tmp, "gateway.log")
        self.start_gateway(config, log_path)

        def output():
            with open(log_path, "rb") as f:
                return f.read().decode(errors="replace")
        wait_for(lambda: read_metric(metrics_port, "upp_gateway_queued_series") is not None, 30,
                 "the polling gateway\n" + output())
        self.orthanc.upload_series(directory)  # in Orthanc only, after the poll has started
        seg = self.found_seg(study)
        self.assertEqual(seg.ReferencedSeriesSequence[0].SeriesInstanceUID, series_uid)
        self.assertEqual(read_metric(metrics_port, "upp_gateway_dicomweb_instances_total", transport="wado-rs",
                                     outcome="stored"), n)
        # Three more searches (1 s apart) find the series, pulled already:
        # nothing is pulled again, and it is remembered once.
        time.sleep(3.5)
        self.assertEqual(read_metric(metrics_port, "upp_gateway_dicomweb_instances_total", transport="wado-rs",
                                     outcome="stored"), n)
        with open(os.path.join(spool, "polled", "orthanc")) as f:
            self.assertEqual(f.read().split(), [series_uid])
        text = output()
        self.assertEqual(text.count("dicomweb: poll of source orthanc: 1 series pulled"), 1, text)
        self.assertNotIn("series pulled", text.replace("dicomweb: poll of source orthanc: 1 series pulled", ""))
        self.assertNotIn("poll of source orthanc failed", text)
        for secret in (study, series_uid, *patient):
            self.assertNotIn(secret, text)  # no UIDs, nothing of the patient's, in the log


if __name__ == "__main__":
    unittest.main()
