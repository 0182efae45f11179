"""The Python client against the real server (synapse-small fixture model)."""
import json
import os
import subprocess
import tempfile
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


if __name__ == "__main__":
    unittest.main()
