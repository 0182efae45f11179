"""upp-plan --check: every problem of a plan in one run, the network's values
named next to the plan's, a good plan (file or embedded) passes.

Run by CTest: UPP_PLAN=<path to upp-plan> UPP_FIXTURES_DIR=<fixtures> python3 -m unittest
"""
import json
import os
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("UPP_FIXTURES_DIR", os.path.join(HERE, "..", "..", "..", "shared",
                                                           "fixtures", "unetrpp"))
UPP_PLAN = os.environ.get("UPP_PLAN", "upp-plan")
# 14 classes, one channel, patch 32 x 64 x 64; no plan in its metadata.
SYNAPSE_SMALL = os.path.join(FIXTURES, "synapse_small_weights.safetensors")
# The project's default model: its plan is embedded.
DEFAULT_MODEL = os.path.join(HERE, "..", "..", "model", "weights", "phantom_ct_v1.safetensors")

GOOD = {
    "target_spacing": [3.0, 0.76, 0.76],
    "normalization": [{"scheme": "ct", "clip_low": -958, "clip_high": 327, "mean": 82, "std": 136}],
    "patch": [32, 64, 64], "num_classes": 14,
    "labels": [{"value": 0, "name": "background", "rgb": [0, 0, 0]}, {"value": 6, "name": "liver"}],
}


class UppPlanTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def plan_file(self, plan):
        path = os.path.join(self.tmp.name, "plan.json")
        with open(path, "w") as f:
            f.write(plan if isinstance(plan, str) else json.dumps(plan))
        return path

    def check(self, *args):
        return subprocess.run([UPP_PLAN, "--check", *args], capture_output=True, text=True, timeout=120)

    def test_good_plan_passes_against_its_network(self):
        proc = self.check(self.plan_file(GOOD), "--weights", SYNAPSE_SMALL, "--print")
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("plan OK", proc.stdout)
        self.assertIn("agrees with the network", proc.stdout)
        # --print: the plan as the server reads it, defaults filled in.
        printed = json.loads(proc.stdout[proc.stdout.index("{"):])
        self.assertEqual(printed["step"], 0.5)
        self.assertEqual(printed["patch"], [32, 64, 64])

    def test_every_problem_is_reported_in_one_run(self):
        plan = dict(GOOD, patch_size=[32, 64, 64], step=2, num_classes="many", transpose=[0, 0, 1],
                    normalization=[{"scheme": "ct", "clip_low": 5, "sd": 3}, {"scheme": "mr"}],
                    labels=[{"value": "x"}, {"value": 1, "rgb": [300, 0, 0]}])
        proc = self.check(self.plan_file(plan))
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        expected = [
            'plan.patch_size: unknown field (did you mean "patch"?)',
            'plan.num_classes: must be an integer, got "many"',
            "plan.normalization[0].clip_high: missing",
            "plan.normalization[0].mean: missing",
            "plan.normalization[0].std: missing",
            'plan.normalization[0].sd: unknown field (did you mean "std"?)',
            'plan.normalization[1].scheme: must be "ct", "zscore" or "none", got "mr"',
            'plan.labels[0].value: must be an integer, got "x"',
            "plan.labels[1].rgb: every component must be in [0, 255], got [300,0,0]",
            "plan.transpose: must be a permutation of 0, 1, 2, got [0,0,1]",
            "plan.step: must be in (0, 1], got 2",
        ]
        for e in expected:
            self.assertIn(e, proc.stdout)
        self.assertIn(f"{len(expected)} problems in", proc.stdout)
        self.assertNotIn("plan OK", proc.stdout)

    def test_mismatches_with_the_weights_name_both_values(self):
        plan = dict(GOOD, patch=[64, 128, 128], num_classes=4, labels=[],
                    normalization=GOOD["normalization"] * 2)
        proc = self.check(self.plan_file(plan), "--weights", SYNAPSE_SMALL)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn("plan.patch [64,128,128] but the network's is [32,64,64]", proc.stdout)
        self.assertIn("plan.num_classes 4 but the network's is 14", proc.stdout)
        self.assertIn("plan.normalization has 2 entries (one per input channel) but the network takes 1",
                      proc.stdout)
        self.assertIn("3 problems", proc.stdout)
        # The same plan without weights has nothing wrong in itself.
        self.assertEqual(self.check(self.plan_file(plan)).returncode, 0)

    def test_weights_files(self):
        proc = self.check(DEFAULT_MODEL)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn('(its "unetrpp_plan")', proc.stdout)
        self.assertIn("agrees with the network", proc.stdout)
        proc = self.check(SYNAPSE_SMALL)
        self.assertEqual(proc.returncode, 1)
        self.assertIn('no "unetrpp_plan" in the weights\' metadata', proc.stdout)
        # The default model's plan (8 classes) does not fit the synapse fixture network.
        proc = self.check(DEFAULT_MODEL, "--weights", SYNAPSE_SMALL)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("plan.num_classes 8 but the network's is 14", proc.stdout)

    def test_unreadable_input(self):
        proc = self.check(self.plan_file('{"patch": [32, 64,'))
        self.assertEqual(proc.returncode, 1)
        self.assertIn("plan.json: not valid JSON", proc.stdout)
        proc = self.check(os.path.join(self.tmp.name, "absent.json"))
        self.assertEqual(proc.returncode, 2)
        self.assertIn("cannot be read", proc.stderr)


if __name__ == "__main__":
    unittest.main()
