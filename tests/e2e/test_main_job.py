"""The main job end to end, as deploy/run-demo.sh runs it, on a small phantom:
the server with no configuration (the default model), the phantom generator,
upp-client (labels, picture, volumes), Dice against the phantom's truth."""
import json
import os
import subprocess
import tempfile
import unittest

import nibabel
import numpy

from server_process import ServerProcess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARD = os.path.join(ROOT, "model", "weights", "phantom_ct_v1.json")
MARGIN = 0.05  # one small phantom vs the card's mean over 20


def dice(truth, pred, label):
    t, p = truth == label, pred == label
    denominator = t.sum() + p.sum()
    return 1.0 if denominator == 0 else 2.0 * numpy.logical_and(t, p).sum() / denominator


class MainJobTest(unittest.TestCase):
    def test_phantom_through_the_server_matches_the_model_card(self):
        with open(CARD) as f:
            card = json.load(f)
        with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
            ct, truth_path = os.path.join(tmp, "ct.nii.gz"), os.path.join(tmp, "truth.nii.gz")
            subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "777001", "--spacing", "1.2", "1.2", "4",
                            "--fov", "420", "420", "220", "-o", ct, "--labels", truth_path],
                           check=True, capture_output=True)
            labels, png, stats = (os.path.join(tmp, n) for n in ("labels.nii.gz", "overview.png", "stats.json"))
            client = os.environ["UPP_CLIENT"]
            run = subprocess.run([client, "--server", server.address, "segment", ct, "-o", labels, "--png", png,
                                  "--json", stats], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertIn("liver", run.stdout)
            truth = numpy.asarray(nibabel.load(truth_path).dataobj)
            pred = numpy.asarray(nibabel.load(labels).dataobj)
            self.assertEqual(truth.shape, pred.shape)
            organs = [l for l in card["labels"] if l["value"] != 0]
            scores = {l["name"]: dice(truth, pred, l["value"]) for l in organs}
            mean = float(numpy.mean(list(scores.values())))
            print("Dice per organ:", json.dumps(scores), "mean", mean)
            self.assertGreaterEqual(mean, card["mean_dice"] - MARGIN, scores)
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
            with open(stats) as f:
                volumes = {l["name"]: l["volume_ml"] for l in json.load(f)["labels"]}
            self.assertGreater(volumes.get("liver", 0), 500)  # a phantom liver is 1-3 L

            self.assertEqual(subprocess.run([client, "--server", server.address, "health"],
                                            capture_output=True).returncode, 0)
            bad = subprocess.run([client, "--server", server.address, "segment", ct, "--model", "nope"],
                                 capture_output=True, text=True)
            self.assertEqual(bad.returncode, 2, bad.stderr)
            self.assertIn("NOT_FOUND", bad.stderr)
        self.assertEqual(server.exit_code, 0, server.output())


if __name__ == "__main__":
    unittest.main()
