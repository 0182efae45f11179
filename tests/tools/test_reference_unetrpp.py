"""The PyTorch baseline (tools/reference_unetrpp.py) computes the reference
network: it reproduces the reference fixtures, so benchmarking it benchmarks
the published computation."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import reference_unetrpp  # noqa: E402

FIXTURES = os.environ.get("UPP_FIXTURES_DIR", os.path.join(HERE, "..", "..", "..", "shared",
                                                           "fixtures", "unetrpp"))


class ReferencePortTest(unittest.TestCase):
    def test_reproduces_every_fixture(self):
        for config in ("synapse", "acdc", "lung", "tumor"):
            with self.subTest(config=config):
                err, agree = reference_unetrpp.check(
                    os.path.join(FIXTURES, f"{config}_small_weights.safetensors"),
                    os.path.join(FIXTURES, f"{config}_small_io.safetensors"))
                self.assertLess(err, 1e-3)
                self.assertGreaterEqual(agree, 0.9999)


if __name__ == "__main__":
    unittest.main()
