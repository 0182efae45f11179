"""The Python client against the real server (synapse-small fixture model)."""
import hashlib
import json
import os
import subprocess
import tempfile
import time
import unittest

import nibabel
import numpy

from server_process import ServerProcess
from unetrpp_client import Client, ServerError

FIXTURES = os.environ.get("UPP_FIXTURES", "")


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
                                    progress=lambda p: stages.append(p.stage))
        self.assertTrue(result.server_request_id)
        self.assertEqual(result.summary.client_request_id, "py-1")
        self.assertIn(4, stages)  # STAGE_INFERENCE
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

    def test_models_health_and_errors(self):
        with Client(self.server.address) as client:
            self.assertTrue(client.healthy())
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
        cls.cert, key = os.path.join(d, "server.pem"), os.path.join(d, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost", "-days", "1", "-keyout", key, "-out", cls.cert],
                       check=True, capture_output=True)
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
        img = nibabel.Nifti1Image(numpy.full((40, 40, 12), -100, dtype=numpy.int16), numpy.diag([2.0, 2.0, 4.0, 1.0]))
        cls.ct = os.path.join(d, "small.nii.gz")
        nibabel.save(img, cls.ct)

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

    def test_plaintext_is_refused(self):
        with Client(self.server.address, token=self.token) as client:
            with self.assertRaises(ServerError) as e:
                client.models()
            self.assertEqual(e.exception.code.name, "UNAVAILABLE")


if __name__ == "__main__":
    unittest.main()
