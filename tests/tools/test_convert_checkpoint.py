"""Converter test: the reference's official-format checkpoint, converted and run
through upp-forward, reproduces the reference outputs; hostile or unsuitable
checkpoints are refused with a message; the preset is inferred from the
weights; plans (our JSON, nnU-Net v1 plans.pkl) are checked, converted and
embedded.

Run by CTest: UPP_FORWARD=<path to upp-forward> UPP_FIXTURES_DIR=<fixtures>
[UPP_PLAN=<path to upp-plan>] python3 -m unittest
"""
import collections
import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
import convert_checkpoint  # noqa: E402
from reference_unetrpp import read_safetensors  # noqa: E402

FIXTURES = os.environ.get("UPP_FIXTURES_DIR", os.path.join(HERE, "..", "..", "..", "shared",
                                                           "fixtures", "unetrpp"))
UPP_FORWARD = os.environ.get("UPP_FORWARD", "upp-forward")
UPP_PLAN = os.environ.get("UPP_PLAN")  # the C++ checker, when built
OFFICIAL = os.path.join(FIXTURES, "synapse_small_official_format.model")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class Touch:
    """Unpickling it would create `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def skeleton(stem, tokens, projection, fusion, res_blocks, classes=14, in_channels=1):
    """The state-dict entries infer_config reads, with tiny tensors: what a full-size
    checkpoint of that architecture shows (pos_embed's token count, stem kernel, E/F or EF,
    out_proj, conv52), without its size."""
    sd = collections.OrderedDict()
    sd["unetr_pp_encoder.downsample_layers.0.0.conv.weight"] = torch.zeros(8, in_channels, *stem)
    sd["encoder1.conv1.conv.weight"] = torch.zeros(4, in_channels, 3, 3, 3)
    sd["out1.conv.conv.weight"] = torch.zeros(classes, 4, 1, 1, 1)
    for s in range(4):
        pre = f"unetr_pp_encoder.stages.{s}.0."
        sd[pre + "epa_block.temperature"] = torch.ones(4, 1, 1)
        sd[pre + "pos_embed"] = torch.zeros(1, tokens // 8 ** s, 1)
        if projection == "shared_matrix":
            sd[pre + "epa_block.EF"] = torch.zeros(2, 64)
        else:
            sd[pre + "epa_block.E.weight"] = torch.zeros(64, 2)
            sd[pre + "epa_block.F.weight"] = torch.zeros(64, 2) + (projection == "separate_linear")
        if fusion == "concat_projected":
            sd[pre + "epa_block.out_proj.weight"] = torch.zeros(4, 8)
        if res_blocks == 2:
            sd[pre + "conv52.conv1.conv.weight"] = torch.zeros(8, 8, 3, 3, 3)
    dec = "decoder5.decoder_block.0.0.epa_block."
    sd[dec + ("EF" if projection == "shared_matrix" else "E.weight")] = torch.zeros(
        *((2, 64) if projection == "shared_matrix" else (64, 2)))
    return sd


def preset_skeleton(name):
    p = convert_checkpoint.PRESETS[name]
    tokens = 1
    for a, b in zip(p["patch"], p["stem"]):
        tokens *= a // b
    return skeleton(p["stem"], tokens, p["projection"], p["fusion"], p["res_blocks_after_epa"])


# The plan the official fixture network (synapse-shaped, patch 32 x 64 x 64,
# 14 classes, one channel) runs with.
GOOD_PLAN = {
    "target_spacing": [3.0, 0.76, 0.76], "transpose": [0, 1, 2],
    "normalization": [{"scheme": "ct", "clip_low": -958.0, "clip_high": 327.0, "mean": 82.0, "std": 136.0}],
    "patch": [32, 64, 64], "num_classes": 14,
    "labels": [{"value": 0, "name": "background", "rgb": [0, 0, 0]}, {"value": 6, "name": "liver",
                                                                       "rgb": [196, 98, 50]}],
}


def nnunet_v1_plans(modalities=("CT",), masks=(False,)):
    """A plans dict built the way nnU-Net v1's ExperimentPlanner builds one (numpy arrays
    and scalars, OrderedDicts, a low-resolution stage 0 and the full-resolution stage 1)."""
    intensity = collections.OrderedDict()
    for c in range(len(modalities)):
        intensity[c] = collections.OrderedDict([
            ("local_props", collections.OrderedDict()), ("median", np.float64(90.0)),
            ("mean", np.float64(99.5 + c)), ("sd", np.float64(137.25)), ("mn", np.float64(-1024.0)),
            ("mx", np.float64(3071.0)), ("percentile_99_5", np.float64(295.0)),
            ("percentile_00_5", np.float64(-958.0))])
    stage = lambda spacing, patch: {  # noqa: E731
        "batch_size": 2, "num_pool_per_axis": [4, 5, 5], "patch_size": np.array(patch),
        "median_patient_size_in_voxels": np.array([148, 512, 512]), "current_spacing": np.array(spacing),
        "original_spacing": np.array([3.0, 0.7578125, 0.7578125]), "do_dummy_2D_data_aug": np.bool_(False),
        "pool_op_kernel_sizes": [[1, 2, 2], [2, 2, 2]], "conv_kernel_sizes": [[1, 3, 3], [3, 3, 3]]}
    all_classes = list(range(1, 14))
    return {
        "num_stages": 2, "num_modalities": len(modalities),
        "modalities": {c: m for c, m in enumerate(modalities)},
        "normalization_schemes": collections.OrderedDict((c, "CT" if m == "CT" else "nonCT")
                                                         for c, m in enumerate(modalities)),
        "dataset_properties": {"all_sizes": [(148, 512, 512)], "all_spacings": [np.array([3.0, 0.76, 0.76])],
                               "all_classes": all_classes, "modalities": {c: m for c, m in enumerate(modalities)},
                               "intensityproperties": intensity, "size_reductions": collections.OrderedDict()},
        "list_of_npz_files": ["/data/img0001.npz"], "original_spacings": [np.array([3.0, 0.76, 0.76])],
        "original_sizes": [np.array([148, 512, 512])], "preprocessed_data_folder": "/data",
        "num_classes": len(all_classes), "all_classes": all_classes, "base_num_features": 32,
        "use_mask_for_norm": collections.OrderedDict(enumerate(masks)), "keep_only_largest_region": None,
        "min_region_size_per_class": None, "min_size_per_class": None,
        "transpose_forward": [np.int64(0), 1, 2], "transpose_backward": [np.int64(0), 1, 2],
        "data_identifier": "unetr_pp_Data_plans_v2.1", "preprocessor_name": "GenericPreprocessor",
        "conv_per_stage": 2,
        "plans_per_stage": {0: stage([4.61, 1.18, 1.18], [64, 128, 128]),
                            1: stage([3.0, 0.7578125, 0.7578125], [64, 128, 128])},
    }


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

    # --- the preset, inferred ---------------------------------------------------------------

    def test_every_preset_is_inferred_from_its_weights(self):
        for name, p in convert_checkpoint.PRESETS.items():
            with self.subTest(preset=name), contextlib.redirect_stdout(io.StringIO()) as out:
                config = convert_checkpoint.infer_config(preset_skeleton(name), None, None)
                self.assertEqual(config["preset"], name)
                self.assertEqual(config["patch"], p["patch"])
                self.assertIn(f"match preset '{name}'", out.getvalue())

    def test_inferred_preset_through_the_command(self):
        ckpt = self.path("synapse.model")
        torch.save({"state_dict": preset_skeleton("synapse"), "epoch": np.int64(999)}, ckpt)
        out = self.path("w.safetensors")
        with contextlib.redirect_stdout(io.StringIO()) as said:
            convert_checkpoint.main([ckpt, out])
        self.assertIn("the weights match preset 'synapse'", said.getvalue())
        config = json.loads(read_safetensors(out)[1]["unetrpp_config"])
        self.assertEqual((config["preset"], config["patch"]), ("synapse", [64, 128, 128]))

    def test_no_matching_preset_lists_what_was_read_and_each_preset(self):
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([OFFICIAL, self.path("x")])
        message = str(cm.exception)
        self.assertIn("cannot infer the preset", message)
        self.assertIn("stem [2, 4, 4], 4096 tokens", message)
        self.assertIn("synapse: patch 64x128x128 gives 32768 tokens", message)
        self.assertIn("tumor: stem [4, 4, 4]", message)
        self.assertIn("--patch D H W", message)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_ambiguous_preset_is_refused(self):
        # A preset with acdc's architecture and another patch of the same token count.
        extra = dict(convert_checkpoint.PRESETS["acdc"], patch=[64, 80, 80])
        with mock.patch.dict(convert_checkpoint.PRESETS, {"acdc_wide": extra}):
            with self.assertRaises(SystemExit) as cm:
                convert_checkpoint.infer_config(preset_skeleton("acdc"), None, None)
        self.assertIn("match presets acdc, acdc_wide alike", str(cm.exception))
        self.assertIn("--preset", str(cm.exception))

    # --- plans ------------------------------------------------------------------------------

    def write_json(self, name, value):
        with open(self.path(name), "w") as f:
            json.dump(value, f)
        return self.path(name)

    def check_with_upp_plan(self, path, *extra):
        """The server's own reader agrees (when upp-plan is built)."""
        if not UPP_PLAN:
            return None
        proc = subprocess.run([UPP_PLAN, "--check", path, *extra], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertIn("plan OK", proc.stdout)
        return proc.stdout

    def test_plan_json_is_embedded_and_read_back(self):
        out = self.path("w.safetensors")
        convert_checkpoint.main([OFFICIAL, out, "--patch", "32", "64", "64",
                                 "--plan", self.write_json("plan.json", GOOD_PLAN)])
        meta = read_safetensors(out)[1]
        self.assertEqual(json.loads(meta["unetrpp_plan"]), GOOD_PLAN)
        said = self.check_with_upp_plan(out)
        if said is not None:
            self.assertIn("agrees with the network", said)

    def test_plan_problems_are_all_listed_with_both_values(self):
        plan = dict(GOOD_PLAN, patch=[64, 128, 128], num_classes=4, patch_size=[64, 128, 128],
                    normalization=[{"scheme": "ct", "clip_high": 327.0, "mean": 82.0, "sd": 136.0}],
                    labels=[{"value": 6}])
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main([OFFICIAL, self.path("x"), "--patch", "32", "64", "64",
                                     "--plan", self.write_json("bad.json", plan)])
        message = str(cm.exception)
        for expected in ['plan.patch_size: unknown field (did you mean "patch"?)',
                         "plan.normalization[0].clip_low: missing",
                         "plan.normalization[0].std: missing",
                         'plan.normalization[0].sd: unknown field (did you mean "std"?)',
                         "plan.labels: value 6 is not a class (0..3)",
                         "plan.patch [64,128,128] but the network's is [32,64,64]",
                         "plan.num_classes 4 but the network's is 14"]:
            self.assertIn(expected, message)
        self.assertIn("7 problem(s)", message)
        self.assertFalse(os.path.exists(self.path("x")))

    def test_crop_is_checked_as_the_server_checks_it(self):
        ct = GOOD_PLAN["normalization"]
        cases = [
            (dict(GOOD_PLAN, crop="head"), 'plan.crop: must be "body", "nonzero" or "none", got "head"'),
            (dict(GOOD_PLAN, crop="none", crop_to_nonzero=True), 'plan.crop_to_nonzero: give "crop" alone'),
            (dict(GOOD_PLAN, crop="body", normalization=[{"scheme": "zscore"}]),
             'plan.crop: "body" finds the body in Hounsfield units: normalization[0] must be "ct", got "zscore"'),
            (dict(GOOD_PLAN, crop_to_nonzero="yes", normalization=ct), 'plan.crop_to_nonzero: must be true or false'),
        ]
        for plan, expected in cases:
            with self.subTest(expected=expected):
                problems = convert_checkpoint.plan_problems(plan)
                self.assertEqual(len(problems), 1, problems)
                self.assertTrue(problems[0].startswith(expected), problems)
                if UPP_PLAN:
                    proc = subprocess.run([UPP_PLAN, "--check", self.write_json("crop.json", plan)],
                                          capture_output=True, text=True)
                    self.assertEqual(proc.returncode, 1, proc.stdout)
                    self.assertIn(expected, proc.stdout)
        for crop in ("body", "nonzero", "none"):
            self.assertEqual(convert_checkpoint.plan_problems(dict(GOOD_PLAN, crop=crop)), [])
        self.assertEqual(convert_checkpoint.plan_problems(dict(GOOD_PLAN, crop_to_nonzero=False)), [])

    def expected_plan_from_pickle(self):
        names = {0: "background", 1: "spleen", 6: "liver"}
        return {
            "target_spacing": [3.0, 0.7578125, 0.7578125], "transpose": [0, 1, 2],
            "normalization": [{"scheme": "ct", "clip_low": -958.0, "clip_high": 295.0, "mean": 99.5,
                               "std": 137.25}],
            "crop": "body", "patch": [32, 64, 64], "step": 0.5, "min_step": 0.25,
            "gaussian_sigma_scale": 0.125, "mirror_axes": [], "anisotropy_threshold": 3.0, "num_classes": 14,
            "names": [names.get(v, f"label {v}") for v in range(14)],
        }

    def test_nnunet_v1_plans_pkl_converts(self):
        with open(self.path("dataset.json"), "w") as f:
            json.dump({"name": "Synapse", "labels": {"0": "background", "1": "spleen", "6": "liver"},
                       "modality": {"0": "CT"}}, f)
        expected = self.expected_plan_from_pickle()
        for protocol in (2, 4, 5):
            with self.subTest(protocol=protocol):
                pkl = self.path(f"plans{protocol}.pkl")
                with open(pkl, "wb") as f:
                    pickle.dump(nnunet_v1_plans(), f, protocol=protocol)
                out_json = self.path(f"plan{protocol}.json")
                with contextlib.redirect_stdout(io.StringIO()) as said:
                    convert_checkpoint.main(["--plan", pkl, "--plan-out", out_json, "--patch", "32", "64", "64",
                                             "--labels", self.path("dataset.json")])
                self.assertIn("patch_size [64, 128, 128] is not the network's [32, 64, 64]", said.getvalue())
                with open(out_json) as f:
                    plan = json.load(f)
                names = [label["name"] for label in plan.pop("labels")]
                self.assertEqual(dict(plan, names=names), expected)
                self.check_with_upp_plan(out_json)

        # Embedded while converting the checkpoint: same plan, patch taken from the network.
        out = self.path("w.safetensors")
        with contextlib.redirect_stdout(io.StringIO()):
            convert_checkpoint.main([OFFICIAL, out, "--patch", "32", "64", "64", "--plan", self.path("plans4.pkl")])
        plan = json.loads(read_safetensors(out)[1]["unetrpp_plan"])
        names = [label["name"] for label in plan.pop("labels")]
        self.assertEqual(names[:2], ["background", "label 1"])  # no --labels: generic names
        self.assertEqual(dict(plan, names=expected["names"]), expected)
        self.check_with_upp_plan(out)

    def test_nnunet_v1_stages_and_mr_channels(self):
        plans = nnunet_v1_plans(modalities=("CT", "T1"), masks=(False, True))
        plan, _ = convert_checkpoint.plan_from_nnunet(plans, stage=0)
        self.assertEqual(plan["target_spacing"], [4.61, 1.18, 1.18])
        self.assertEqual(plan["patch"], [64, 128, 128])
        self.assertEqual(plan["normalization"][1], {"scheme": "zscore", "use_nonzero_mask": True})
        self.assertEqual(plan["normalization"][0]["scheme"], "ct")
        plans["normalization_schemes"][1] = "CT2"
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.plan_from_nnunet(plans)
        self.assertIn("CT2", str(cm.exception))

    def test_plans_pkl_referencing_other_code_is_refused(self):
        marker = self.path("ran")
        plans = nnunet_v1_plans()
        plans["preprocessor_name"] = Touch(marker)
        pkl = self.path("evil.pkl")
        with open(pkl, "wb") as f:
            pickle.dump(plans, f)
        with self.assertRaises(SystemExit) as cm:
            convert_checkpoint.main(["--plan", pkl, "--plan-out", self.path("p.json")])
        self.assertIn("references posix.system", str(cm.exception))
        self.assertIn("refusing to load it", str(cm.exception))
        self.assertFalse(os.path.exists(marker))
        self.assertFalse(os.path.exists(self.path("p.json")))

    def test_no_plan_warns(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
            convert_checkpoint.main([OFFICIAL, self.path("w.safetensors"), "--patch", "32", "64", "64"])
        self.assertIn("no --plan", err.getvalue())
        self.assertIn("generic CT settings", err.getvalue())
        self.assertNotIn("unetrpp_plan", read_safetensors(self.path("w.safetensors"))[1])


if __name__ == "__main__":
    unittest.main()
