"""The shipped model's label colours (in its weights' plan) are distinct:
every pair of structures at least 20 CIELAB units apart (CIE76), so the
overview PNG, viewers and the SEG's recommended colours tell them apart.
An independent sRGB -> CIELAB conversion (not the C++ one under test)."""
import itertools
import json
import os
import struct
import unittest

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "model", "weights", "phantom_ct_v1.safetensors")


def lab(rgb):
    def linear(c):
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
    f = lambda t: t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116  # noqa: E731
    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def distance(a, b):
    return sum((p - q) ** 2 for p, q in zip(lab(a), lab(b))) ** 0.5


class LabelPaletteTest(unittest.TestCase):
    def test_shipped_model_colours_are_distinct(self):
        with open(WEIGHTS, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
        labels = json.loads(header["__metadata__"]["unetrpp_plan"])["labels"]
        organs = [l for l in labels if l["value"] != 0]
        self.assertEqual(len(organs), 7)
        closest = min((distance(a["rgb"], b["rgb"]), a["name"], b["name"])
                      for a, b in itertools.combinations(organs, 2))
        self.assertGreaterEqual(closest[0], 20.0, closest)

    def test_the_measure_tells_salmon_shades_apart_from_distinct_colours(self):
        self.assertLess(distance((221, 130, 101), (216, 132, 105)), 5)  # Slicer's liver and stomach
        self.assertGreater(distance((255, 0, 0), (0, 0, 255)), 100)


if __name__ == "__main__":
    unittest.main()
