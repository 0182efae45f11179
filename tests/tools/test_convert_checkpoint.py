"""Converter test: the reference's official-format checkpoint, converted and run
through upp-forward, reproduces the reference outputs; hostile or unsuitable
checkpoints are refused with a message.

Run by CTest: UPP_FORWARD=<path to upp-forward> UPP_FIXTURES_DIR=<fixtures> python3 -m unittest
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import convert_checkpoint  # noqa: E402
from reference_unetrpp import read_safetensors  # noqa: E402

FIXTURES = os.environ.get("UPP_FIXTURES_DIR", os.path.join(HERE, "..", "..", "..", "shared",
                                                           "fixtures", "unetrpp"))
UPP_FORWARD = os.environ.get("UPP_FORWARD", "upp-forward")
OFFICIAL = os.path.join(FIXTURES, "synapse_small_official_format.model")

class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class ConvertCheckpointTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_converted_official_checkpoint_reproduces_reference(self):
        out = self.path("w.safetensors")
        convert_checkpoint.main([OFFICIAL, out, "--preset", "synapse", "--patch", "32", "64", "64"])
        tensors, meta = read_safetensors(out)
        config = json.loads(meta["unetrpp_config"])
        self.assertEqual(config["feature_size"], 4)
        self.assertEqual(config["depths"], [1, 1, 1, 1])
        self.assertEqual(config["projection"], "shared_linear")
        self.assertEqual(config["preset"], "synapse")
        # The reference stores the shared E/F under both names; so do we.
        self.assertTrue(torch.equal(tensors["unetr_pp_encoder.stages.0.0.epa_block.E.weight"],
                                    tensors["unetr_pp_encoder.stages.0.0.epa_block.F.weight"]))

        result = self.path("out.safetensors")
        subprocess.run([UPP_FORWARD, "--weights", out, "--input",
                        os.path.join(FIXTURES, "synapse_small_io.safetensors"), "--output", result,
                        "--threads", "2"], check=True)
        got, _ = read_safetensors(result)
        ref, _ = read_safetensors(os.path.join(FIXTURES, "synapse_small_io.safetensors"))
        err = (got["logits"] - ref["logits"].float()).abs().max().item()
        agree = (got["labels"] == ref["labels"]).double().mean().item()
        print(f"converted official checkpoint: max |dlogit| {err:.3g}, label agreement {agree:.6f}")
        self.assertLess(err, 1e-3)
        self.assertGreaterEqual(agree, 0.9999)

    def test_upp_forward_with_explicit_architecture_flags(self):
        # The fixture weights carry fixture-style metadata; naming the architecture on the
        # command line instead must give the same result.
        result = self.path("flags.safetensors")
        subprocess.run([UPP_FORWARD, "--weights",
                        os.path.join(FIXTURES, "acdc_small_weights.safetensors"),
                        "--input", os.path.join(FIXTURES, "acdc_small_io.safetensors"),
                        "--output", result, "--preset", "acdc", "--feature-size", "4",
                        "--depths", "1", "1", "1", "1", "--patch", "16", "64", "64",
                        "--heads", "4", "--classes", "4", "--in-channels", "1"], check=True)
        got, meta = read_safetensors(result)
        ref, _ = read_safetensors(os.path.join(FIXTURES, "acdc_small_io.safetensors"))
        self.assertEqual(list(got["logits"].shape), [2, 4, 16, 64, 64])  # batch of two windows
        self.assertLess((got["logits"] - ref["logits"].float()).abs().max().item(), 1e-3)
        self.assertEqual(got["labels"].dtype, torch.uint8)
        self.assertEqual(json.loads(meta["unetrpp_config"])["preset"], "acdc")

    def test_upp_forward_reports_mismatched_architecture(self):
        proc = subprocess.run([UPP_FORWARD, "--weights",
                               os.path.join(FIXTURES, "synapse_small_weights.safetensors"),
                               "--input", os.path.join(FIXTURES, "synapse_small_io.safetensors"),
                               "--output", self.path("x.safetensors"), "--feature-size", "8"],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("shape mismatch: encoder1.conv1.conv.weight", proc.stderr)
        proc = subprocess.run([UPP_FORWARD, "--weights",
                               os.path.join(FIXTURES, "synapse_small_weights.safetensors"),
                               "--input", os.path.join(FIXTURES, "synapse_small_weights.safetensors"),
                               "--output", self.path("x.safetensors")],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("has no tensor 'input'", proc.stderr)

    def test_f16_storage_and_dropping_deep_supervision(self):
        out = self.path("w16.safetensors")
        convert_checkpoint.main([OFFICIAL, out, "--patch", "32", "64", "64", "--dtype", "f16",
                                 "--drop-deep-supervision"])
        tensors, meta = read_safetensors(out)
        self.assertEqual(tensors["out1.conv.conv.weight"].dtype, torch.float16)
        self.assertNotIn("out2.conv.conv.weight", tensors)
        self.assertEqual(json.loads(meta["unetrpp_config"])["preset"], "custom")

    def test_wrong_patch_is_refused(self):
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([OFFICIAL, self.path("x"), "--patch", "64", "64", "64"])
        self.assertIn("tokens", str(cm.exception))
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([OFFICIAL, self.path("x")])
        self.assertIn("--patch", str(cm.exception))

    def test_preset_that_contradicts_the_weights_is_refused(self):
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([OFFICIAL, self.path("x"), "--preset", "acdc", "--patch",
                                     "32", "64", "64"])
        self.assertIn("preset 'acdc'", str(cm.exception))

    def test_checkpoint_that_runs_code_is_refused(self):
        evil = self.path("evil.model")
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, evil)
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([evil, self.path("x"), "--patch", "32", "64", "64"])
        self.assertIn("refusing to load it", str(cm.exception))
        self.assertIn("system", str(cm.exception))

    def test_not_a_checkpoint(self):
        bad = self.path("bad.model")
        with open(bad, "wb") as f:
            f.write(b"not a zip file at all")
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([bad, self.path("x"), "--patch", "32", "64", "64"])
        self.assertIn("cannot read", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
