"""The Python client against the real server (synapse-small fixture model)."""
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc
import nibabel
import numpy

from server_process import ServerProcess, free_port
from unetrpp_client import Client, ConnectionSetupError, RequestError, ServerError, stage_name
from unetrpp.v1 import segmentation_pb2 as pb
from unetrpp.v1 import segmentation_pb2_grpc as pb_grpc

FIXTURES = os.environ.get("UPP_FIXTURES", "")
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WEIGHTS = ["--weights", os.path.join(FIXTURES, "synapse_small_weights.safetensors")]


def make_certificate(folder: str):
    """A self-signed certificate for localhost: (cert, key) paths."""
    cert, key = os.path.join(folder, "server.pem"), os.path.join(folder, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def small_ct(path: str) -> str:
    img = nibabel.Nifti1Image(numpy.full((40, 40, 12), -100, dtype=numpy.int16), numpy.diag([2.0, 2.0, 4.0, 1.0]))
    nibabel.save(img, path)
    return path


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        plan = {"target_spacing": [4.0, 4.0, 4.0], "patch": [32, 64, 64], "num_classes": 14,
                "normalization": [{"scheme": "ct", "clip_low": -200, "clip_high": 400, "mean": 50, "std": 120}],
                "labels": [{"value": 1, "name": "spleen", "rgb": [157, 108, 162]}]}
        plan_path = os.path.join(cls.tmp.name, "plan.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        cls.server = ServerProcess(["--weights", os.path.join(FIXTURES, "synapse_small_weights.safetensors"),
                                    "--plan", plan_path]).__enter__()
        cls.ct = os.path.join(cls.tmp.name, "ct.nii.gz")
        cls.dicom = os.path.join(cls.tmp.name, "dicom")
        subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "5", "--spacing", "2", "2", "5", "--fov", "300", "260",
                        "120", "-o", cls.ct, "--dicom", cls.dicom], check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        cls.tmp.cleanup()

    def test_segment_nifti_gives_labels_on_the_input_grid(self):
        stages = []
        with Client(self.server.address) as client:
            result = client.segment([self.ct], outputs=["nifti", "raw"], client_request_id="py-1",
                                    progress=lambda p: stages.append(stage_name(p.stage)))
        self.assertTrue(result.server_request_id)
        self.assertEqual(result.summary.client_request_id, "py-1")
        self.assertIn("inference", stages)
        self.assertIn("inference", result.timings())
        self.assertEqual(sorted(result.outputs), ["nifti", "raw"])  # what was asked for, no more
        path = os.path.join(self.tmp.name, "labels.nii.gz")
        with open(path, "wb") as f:
            f.write(result.outputs["nifti"])
        labels, ct = nibabel.load(path), nibabel.load(self.ct)
        self.assertEqual(labels.shape, ct.shape)
        numpy.testing.assert_allclose(labels.affine, ct.affine, atol=1e-4)
        raw = numpy.frombuffer(result.outputs["raw"], dtype="<u2").reshape(ct.shape[::-1])
        numpy.testing.assert_array_equal(raw.transpose(2, 1, 0), numpy.asarray(labels.dataobj))
        self.assertEqual(sum(v.voxels for v in result.header.volumes), int(numpy.prod(ct.shape)))

    def test_segment_dicom_with_seg(self):
        with Client(self.server.address) as client:
            result = client.segment([self.dicom], dicom=True, outputs=["seg", "raw"])
        self.assertEqual(result.outputs["seg"][128:132], b"DICM")
        self.assertEqual(len(result.outputs["raw"]), 2 * int(numpy.prod(list(result.header.geometry.size))))

    def test_readme_command(self):
        """The README's example command, as written, run from the source root."""
        with open(os.path.join(SOURCE, "README.md")) as f:
            commands = re.findall(r"PYTHONPATH=build/python python3 clients/python/example\.py [^`\n]*", f.read())
        self.assertEqual(len(commands), 1, commands)
        words = shlex.split(commands[0])
        self.assertEqual(words[:3], ["PYTHONPATH=build/python", "python3", "clients/python/example.py"])
        self.assertEqual(len(words), 5, words)  # INPUT OUTPUT, the default server
        labels = os.path.join(self.tmp.name, "readme-labels.nii.gz")
        # build/python is this build's python folder (PYTHONPATH of this test),
        # python3 the interpreter running the tests, the files ours, and the
        # server this test's (not on the default port).
        env = dict(os.environ, PYTHONPATH=os.environ["PYTHONPATH"])
        run = subprocess.run([sys.executable, words[2], self.ct, labels, "--server", self.server.address],
                             cwd=SOURCE, env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(nibabel.load(labels).shape, nibabel.load(self.ct).shape)
        self.assertRegex(run.stdout, r"\S+ +\d+\.\d mL")
        self.assertIn("inference", run.stderr)  # stages by name
        # Without the build's folder on the path: an ImportError that says what to do.
        env.pop("PYTHONPATH")
        run = subprocess.run([sys.executable, words[2], self.ct, labels], cwd=SOURCE, env=env,
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("PYTHONPATH=build/python", run.stderr)

    def test_example_sends_a_dicom_folder(self):
        labels, seg = os.path.join(self.tmp.name, "ex-labels.nii.gz"), os.path.join(self.tmp.name, "ex-seg.dcm")
        run = subprocess.run([sys.executable, "clients/python/example.py", self.dicom, labels, "--seg", seg,
                              "--server", self.server.address], cwd=SOURCE, capture_output=True, text=True,
                             timeout=300)
        self.assertEqual(run.returncode, 0, run.stderr)
        with open(seg, "rb") as f:
            self.assertEqual(f.read()[128:132], b"DICM")
        self.assertGreater(len(numpy.unique(numpy.asarray(nibabel.load(labels).dataobj))), 1)

    def test_folder_without_dicom_flag_leaves_other_files_out(self):
        folder = os.path.join(self.tmp.name, "series-with-readme")
        shutil.copytree(self.dicom, folder)
        readme = os.path.join(folder, "README.txt")
        with open(readme, "w") as f:
            f.write("Exported by a PACS viewer.\n")
        os.mkdir(os.path.join(folder, "subfolder"))  # not descended into, as upp-client
        with Client(self.server.address) as client:
            with self.assertLogs("unetrpp_client", "WARNING") as logs:
                result = client.segment(folder, outputs=["seg"])
            self.assertEqual(result.skipped_files, [readme])
            self.assertIn("1 file(s) that are not DICOM", logs.output[0])
            self.assertNotIn("README.txt", logs.output[0])
            self.assertEqual(result.outputs["seg"][128:132], b"DICM")
            self.assertEqual(list(result.outputs), ["seg"])
            self.assertEqual(result.input.instances_used, len(os.listdir(self.dicom)))
            with self.assertRaises(RequestError) as e:
                client.segment([folder], dicom=False)
            self.assertIn("dicom=True", str(e.exception))
            empty = os.path.join(self.tmp.name, "no-dicom")
            os.mkdir(empty)
            shutil.copy(readme, empty)
            with self.assertRaises(RequestError) as e:
                client.segment(empty)
            self.assertIn("holds no DICOM files", str(e.exception))

    def test_local_mistakes_are_typed_errors(self):
        with Client(self.server.address) as client:
            with self.assertRaises(RequestError) as e:
                client.segment([self.ct], outputs=["png"])
            self.assertIn("'png'", str(e.exception))
            self.assertIn("nifti, seg, raw", str(e.exception))
            self.assertIsInstance(e.exception, ValueError)
            missing = os.path.join(self.tmp.name, "missing.nii.gz")
            with self.assertRaises(RequestError) as e:
                client.segment([missing])
            self.assertIn(missing, str(e.exception))
            with self.assertRaises(RequestError):
                client.segment([])

    def test_tls_client_against_a_plaintext_server(self):
        cert, _ = make_certificate(self.tmp.name)
        start = time.monotonic()
        with Client(self.server.address, tls_ca=cert, server_name="localhost", connect_timeout=30) as client:
            with self.assertRaises(ConnectionSetupError) as e:
                client.segment([self.ct], attempts=5)
        self.assertLess(time.monotonic() - start, 10)  # found out, not waited for or retried
        self.assertIn("plaintext", str(e.exception))
        self.assertNotEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
        run = subprocess.run([sys.executable, "clients/python/example.py", self.ct, os.path.join(self.tmp.name, "x"),
                              "--tls-ca", cert, "--server-name", "localhost", "--server", self.server.address],
                             cwd=SOURCE, capture_output=True, text=True, timeout=60)
        self.assertEqual(run.returncode, 1, run.stderr)
        self.assertIn("is plaintext", run.stderr)

    def test_models_health_and_errors(self):
        with Client(self.server.address) as client:
            self.assertTrue(client.healthy())
            self.assertTrue(client._ready())  # calls on a connected channel skip the connection check
            self.assertTrue(client.healthy("unetrpp.v1.Segmentation/default"))
            models = client.models()
            self.assertEqual([m.name for m in models.models], ["default"])
            self.assertEqual(client.model("default").input_channels, 1)
            with self.assertRaises(ServerError) as e:
                client.segment([self.ct], model="nope")
            self.assertEqual(e.exception.code.name, "NOT_FOUND")
            with self.assertRaises(ServerError) as e:
                client.segment([b"not a nifti file at all"])
            self.assertEqual(e.exception.code.name, "INVALID_ARGUMENT")
            self.assertIsNone(e.exception.retry_after)

    def test_retry_hints_are_read_from_the_trailers(self):
        from unetrpp_client.client import _retry_after
        self.assertEqual(_retry_after((("retry-after-ms", "30000"),)), 30.0)
        self.assertIsNone(_retry_after((("other", "1"),)))
        self.assertIsNone(_retry_after((("retry-after-ms", "soon"),)))
        self.assertIsNone(_retry_after(None))


class RoundRobinTest(unittest.TestCase):
    """load_balancing="round_robin" over two replicas, and attempts= across a replica stopped."""

    def test_calls_spread_and_survive_a_stopped_replica(self):
        with tempfile.TemporaryDirectory() as tmp:
            plan = {"target_spacing": [4.0, 4.0, 4.0], "patch": [32, 64, 64], "num_classes": 14,
                    "normalization": [{"scheme": "ct", "clip_low": -200, "clip_high": 400, "mean": 50, "std": 120}],
                    "labels": [{"value": 1, "name": "spleen", "rgb": [157, 108, 162]}]}
            with open(os.path.join(tmp, "plan.json"), "w") as f:
                json.dump(plan, f)
            weights = ["--weights", os.path.join(FIXTURES, "synapse_small_weights.safetensors"),
                       "--plan", os.path.join(tmp, "plan.json")]
            ct = os.path.join(tmp, "ct.nii.gz")
            subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "6", "--spacing", "4", "4", "4", "--fov", "128",
                            "128", "96", "-o", ct], check=True, capture_output=True)
            with ServerProcess(weights) as a, ServerProcess(weights) as b:
                target = f"ipv4:{a.address},{b.address}"
                with Client(target, load_balancing="round_robin") as client:
                    for _ in range(6):
                        client.segment([ct], outputs=["raw"])
                    # Each server logs a request just after its status is sent.
                    deadline = time.time() + 10
                    served = [0, 0]
                    while sum(served) < 6 and time.time() < deadline:
                        served = [s.output().count("status=OK") for s in (a, b)]
                        time.sleep(0.1)
                    self.assertEqual(sum(served), 6)
                    self.assertTrue(all(n >= 2 for n in served), served)  # both replicas took calls
                    a.__exit__(None, None, None)  # SIGTERM: drains, exits
                    self.assertEqual(a.exit_code, 0)
                    for _ in range(3):
                        client.segment([ct], outputs=["raw"], attempts=4)
                    deadline = time.time() + 10
                    while b.output().count("status=OK") < served[1] + 3 and time.time() < deadline:
                        time.sleep(0.1)
                    self.assertEqual(b.output().count("status=OK"), served[1] + 3)


class SecuredServerTest(unittest.TestCase):
    """TLS (a self-signed certificate made with openssl) and a required API key."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.cert, key = make_certificate(d)
        cls.token = "py-client-key-5e1f"
        keys = os.path.join(d, "keys.txt")
        with open(keys, "w") as f:
            f.write(f"pyclient {hashlib.sha256(cls.token.encode()).hexdigest()} user\n")
        config = (f"tls {{ cert_file: '{cls.cert}' key_file: '{key}' }}\n"
                  f"auth {{ required: true api_keys_file: '{keys}' }}\n")
        secure = {"tls_ca": cls.cert, "server_name": "localhost"}
        cls.server = ServerProcess(["--weights", os.path.join(FIXTURES, "synapse_small_weights.safetensors")],
                                   config_text=config, client_kwargs=dict(secure, token=cls.token)).__enter__()
        cls.secure = secure
        cls.ct = small_ct(os.path.join(d, "small.nii.gz"))

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        cls.tmp.cleanup()

    def test_token_over_tls(self):
        with Client(self.server.address, token=self.token, **self.secure) as client:
            result = client.segment([self.ct], outputs=["raw"])
        self.assertEqual(len(result.outputs["raw"]), 2 * 40 * 40 * 12)

    def test_missing_and_wrong_tokens_are_refused(self):
        for token in ("", "wrong-key"):
            with Client(self.server.address, token=token, **self.secure) as client:
                with self.assertRaises(ServerError) as e:
                    client.models()
                self.assertEqual(e.exception.code.name, "UNAUTHENTICATED")

    def test_plaintext_client_is_told_to_use_tls(self):
        start = time.monotonic()
        with Client(self.server.address, token=self.token, connect_timeout=30) as client:
            with self.assertRaises(ConnectionSetupError) as e:
                client.segment([self.ct], attempts=5)
            self.assertLess(time.monotonic() - start, 10)  # found out, not waited for or retried
            self.assertIn("speaks TLS: pass tls_ca", str(e.exception))
            self.assertEqual(e.exception.code, grpc.StatusCode.FAILED_PRECONDITION)
            with self.assertRaises(ConnectionSetupError):
                client.models()
        run = subprocess.run([sys.executable, "clients/python/example.py", self.ct, os.path.join(self.tmp.name, "x"),
                              "--server", self.server.address], cwd=SOURCE, capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(run.returncode, 1, run.stderr)
        self.assertIn("speaks TLS: pass tls_ca", run.stderr)


class LateServerTest(unittest.TestCase):
    """A client started before the server: the first call waits for it, and
    retries connect afresh (not a channel stuck in its reconnect backoff)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ct = small_ct(os.path.join(cls.tmp.name, "small.nii.gz"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def segment_with_a_server_started_late(self, delay, **client_kwargs):
        """Starts a client's segment() `delay` seconds before the server
        (a bare process: no health checks of ours reach its port first)."""
        server = ServerProcess(WEIGHTS)
        starter = threading.Timer(delay, server.start)
        segment_kwargs = {"attempts": client_kwargs.pop("attempts", 1), "deadline": 120}
        try:
            with Client(server.address, connect_timeout=0) as probe:  # nothing there yet
                with self.assertRaises(ServerError) as e:
                    probe.models()
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertIn("cannot connect", e.exception.message)
            with Client(server.address, **client_kwargs) as client:
                begin = time.monotonic()
                starter.start()
                result = client.segment([self.ct], outputs=["raw"], **segment_kwargs)
                took = time.monotonic() - begin
        finally:
            starter.cancel()
            if starter.ident is not None:
                starter.join()
            server.__exit__(None, None, None)
            server.log.close()
        self.assertEqual(len(result.outputs["raw"]), 2 * 40 * 40 * 12)
        self.assertGreaterEqual(took, delay)
        return took

    def test_first_call_waits_for_the_server(self):
        self.segment_with_a_server_started_late(2.0)  # defaults: one attempt, 10 s for a connection

    def test_retries_reconnect(self):
        # Each attempt waits 0.5 s for a connection: only retries that
        # connect afresh reach the server, up 2 s (and its start-up) later.
        self.segment_with_a_server_started_late(2.0, connect_timeout=0.5, attempts=60)

    def test_without_retries_a_short_connect_timeout_fails(self):
        port = free_port()
        with Client(f"127.0.0.1:{port}", connect_timeout=0.5) as client:
            start = time.monotonic()
            with self.assertRaises(ServerError) as e:
                client.segment([self.ct], attempts=1)
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertLess(time.monotonic() - start, 5)
            with self.assertRaises(ServerError) as e:
                client.segment([self.ct], attempts=3, deadline=0.3)
            self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)


class RecordingServer(pb_grpc.SegmentationServicer):
    """A stand-in Segmentation service that keeps the request header and
    answers with an input summary (what the real server reports)."""

    def __init__(self):
        self.headers = []
        self.inputs = 0

    def Segment(self, request_iterator, context):
        header, inputs = None, set()
        for r in request_iterator:
            if r.HasField("header"):
                header = r.header
            elif r.HasField("chunk"):
                inputs.add(r.chunk.input_index)
        self.headers.append(header)
        self.inputs = len(inputs)
        yield pb.SegmentResponse(accepted=pb.Accepted(server_request_id="rec-1"))
        yield pb.SegmentResponse(progress=pb.Progress(stage=pb.STAGE_INFERENCE, fraction=1.0))
        summary = pb.InputSummary(series_instance_uid=header.series_instance_uid, instances_used=len(inputs) - 1,
                                  skipped=[pb.SkippedInputs(reason="another series", count=1)])
        yield pb.SegmentResponse(result_header=pb.ResultHeader(outputs=[pb.OUTPUT_KIND_RAW_LABELS], output_bytes=[4],
                                                               input=summary))
        yield pb.SegmentResponse(result_chunk=pb.ResultChunk(output=pb.OUTPUT_KIND_RAW_LABELS, data=b"\0\0\1\0"))
        yield pb.SegmentResponse(summary=pb.Summary(server_request_id="rec-1"))


class RequestHeaderTest(unittest.TestCase):
    """What the client puts in the header (series, outputs, format), and the
    input summary it hands back, against a stand-in service; stage names."""

    def test_stage_names(self):
        self.assertEqual(stage_name(pb.STAGE_RECEIVING), "receiving")
        self.assertEqual(stage_name(pb.STAGE_INFERENCE), "inference")
        self.assertEqual(stage_name(pb.STAGE_SENDING), "sending")
        self.assertEqual(stage_name(99), "stage 99")

    def test_series_outputs_and_input_summary(self):
        service = RecordingServer()
        server = grpc.server(futures.ThreadPoolExecutor(2))
        pb_grpc.add_SegmentationServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with tempfile.TemporaryDirectory() as folder:
                for i in range(3):
                    with open(os.path.join(folder, f"IM{i}"), "wb") as f:
                        f.write(b"\0" * 128 + b"DICM" + b"\2\0\1\0" * 8)
                with open(os.path.join(folder, "notes.txt"), "w") as f:
                    f.write("not DICOM\n")
                with Client(f"127.0.0.1:{port}") as client, self.assertLogs("unetrpp_client", "WARNING"):
                    result = client.segment([folder], outputs=["raw", "raw"], series_instance_uid="1.2.826.0.1.7")
            header = service.headers[0]
            self.assertEqual(header.series_instance_uid, "1.2.826.0.1.7")
            self.assertEqual(header.format, pb.INPUT_FORMAT_DICOM)
            self.assertEqual(list(header.outputs), [pb.OUTPUT_KIND_RAW_LABELS])
            self.assertEqual(service.inputs, 3)  # notes.txt not sent
            self.assertEqual(result.input.series_instance_uid, "1.2.826.0.1.7")
            self.assertEqual(result.input.instances_used, 2)
            self.assertEqual([(s.reason, s.count) for s in result.input.skipped], [("another series", 1)])
            self.assertEqual(result.outputs, {"raw": b"\0\0\1\0"})
        finally:
            server.stop(0)


if __name__ == "__main__":
    unittest.main()
