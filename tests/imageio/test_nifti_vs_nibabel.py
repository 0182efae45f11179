"""Our NIfTI reader (via upp-volume-info) against nibabel, an independent
reference reader: nibabel's own test files, and files nibabel writes in every
datatype, both NIfTI versions, both byte orders, gz or not, scaled, and with
sform, qform or neither.

Run by CTest: UPP_VOLUME_INFO=<path> python3 -m unittest test_nifti_vs_nibabel
"""
import glob
import json
import os
import subprocess
import tempfile
import unittest

import nibabel as nib
import numpy as np

TOOL = os.environ.get("UPP_VOLUME_INFO", "upp-volume-info")
NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
LPS = np.diag([-1.0, -1.0, 1.0])


def ours(path):
    proc = subprocess.run([TOOL, path], capture_output=True, text=True)
    return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)


def expected(img):
    hdr = img.header
    data = np.asanyarray(img.dataobj).astype(np.float64) if hdr.get_slope_inter()[0] is None \
        else img.get_fdata(dtype=np.float64)
    flat = data.reshape(-1, order="F")
    idx = np.arange(flat.size) % 9973
    sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
    if sform_code > 0:
        aff = hdr.get_sform()
    elif qform_code > 0:
        aff = hdr.get_qform()
    else:  # the standard's method 1 (nibabel's own fallback centres the image instead)
        aff = np.diag(list(hdr.get_zooms()[:3]) + [1.0])
    m = LPS @ aff[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    return {
        "size": list(data.shape[:3]) + [1] * (3 - min(3, data.ndim)),
        "channels": int(data.shape[3]) if data.ndim == 4 else 1,
        "spacing": spacing, "direction": (m / spacing).reshape(-1), "origin": LPS @ aff[:3, 3],
        "sum": np.nansum(flat), "weighted_sum": np.nansum(flat * idx),
        "nan_count": int(np.isnan(flat).sum()),
    }


class NiftiVsNibabel(unittest.TestCase):
    def compare(self, path):
        rc, got = ours(path)
        self.assertEqual(rc, 0, f"{path}: {got}")
        exp = expected(nib.load(path))
        self.assertEqual(got["size"], exp["size"][:3], path)
        self.assertEqual(got["channels"], exp["channels"], path)
        np.testing.assert_allclose(got["spacing"], exp["spacing"], rtol=1e-5, err_msg=path)
        np.testing.assert_allclose(got["direction"], exp["direction"], atol=1e-5, err_msg=path)
        np.testing.assert_allclose(got["origin"], exp["origin"], atol=1e-4, err_msg=path)
        self.assertEqual(got["nan_count"], exp["nan_count"], path)
        scale = max(1.0, abs(exp["sum"]))
        self.assertLess(abs(got["sum"] - exp["sum"]) / scale, 1e-5, path)
        wscale = max(1.0, abs(exp["weighted_sum"]))
        self.assertLess(abs(got["weighted_sum"] - exp["weighted_sum"]) / wscale, 1e-5, path)
        return got

    def check_label_round_trip(self, path, tmp, mod):
        out = os.path.join(tmp, "labels.nii.gz")
        proc = subprocess.run([TOOL, path, "--write-labels", out, "--label-mod", str(mod)],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        src, lab = nib.load(path), nib.load(out)
        data = np.asanyarray(src.dataobj).astype(np.float64) if src.header.get_slope_inter()[0] is None \
            else src.get_fdata(dtype=np.float64)
        if data.ndim == 4:
            data = data[..., 0]
        finite = np.isfinite(data)
        expect = np.where(finite, np.abs(np.round(np.where(finite, data, 0))).astype(np.int64) % mod, 0)
        got = np.asanyarray(lab.dataobj)
        self.assertEqual(got.dtype, np.uint8 if expect.max() <= 255 else np.uint16)
        # np.round is half-to-even, llround half-away: allow disagreement only on exact .5 values.
        halves = np.isclose(np.abs(data - np.trunc(data)), 0.5) & finite
        np.testing.assert_array_equal(got[~halves], expect[~halves])
        self.assertEqual(lab.header["intent_code"], 1002)
        for form in ("sform", "qform"):
            code = int(src.header[f"{form}_code"])
            self.assertEqual(int(lab.header[f"{form}_code"]), code)
            if code > 0:
                a = getattr(src.header, f"get_{form}")()
                b = getattr(lab.header, f"get_{form}")()
                np.testing.assert_allclose(b, a, atol=1e-4, err_msg=f"{path} {form}")
        # Both forms are written whatever the codes say, and agree with each other (up to the
        # slight shear some sforms carry, which a quaternion cannot express).
        np.testing.assert_allclose(lab.header.get_qform(), lab.header.get_sform(), atol=1e-3)
        # Our reader reads the geometry back unchanged.
        rc, back = ours(out)
        rc0, first = ours(path)
        for key in ("size", "spacing", "origin", "direction"):
            np.testing.assert_allclose(back[key], first[key], atol=1e-4, err_msg=key)

    def test_label_maps_keep_the_input_geometry(self):
        with tempfile.TemporaryDirectory() as tmp:
            files = [os.path.join(NIB_DATA, f) for f in
                     ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz",
                      "reoriented_anat_moved.nii", "standard.nii.gz")]
            for path in files:
                for mod in (7, 300):
                    with self.subTest(file=os.path.basename(path), mod=mod):
                        self.check_label_round_trip(path, tmp, mod)

    def test_nibabel_test_files(self):
        tried = 0
        for path in sorted(glob.glob(os.path.join(NIB_DATA, "*.nii")) +
                           glob.glob(os.path.join(NIB_DATA, "*.nii.gz"))):
            img = nib.load(path)
            if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
                continue
            with self.subTest(file=os.path.basename(path)):
                if img.ndim > 4:
                    rc, err = ours(path)
                    self.assertNotEqual(rc, 0)
                    self.assertIn("more than 4 dimensions", err)
                    continue
                self.compare(path)
                tried += 1
        self.assertGreaterEqual(tried, 5)

    def test_written_variants(self):
        rng = np.random.default_rng(7)
        affine = np.array([[0.0, -0.9, 0.1, 12.0], [0.8, 0.0, 0.0, -30.5], [0.0, 0.1, 2.5, 7.25], [0, 0, 0, 1]])
        # Make the 3x3 part a rotation times spacing (orthonormal directions).
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine[:3, :3] = q @ np.diag([0.8, 0.9, 2.5])
        dtypes = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.float32,
                  np.float64, np.int64, np.uint64]
        with tempfile.TemporaryDirectory() as tmp:
            n = 0
            for version, cls in ((1, nib.Nifti1Image), (2, nib.Nifti2Image)):
                for dt in dtypes:
                    for endian in ("<", ">"):
                        for ext in (".nii", ".nii.gz"):
                            for form in ("sform", "qform", "none"):
                                shape = (5, 4, 3) if dt != np.float32 else (5, 4, 3, 2)
                                info = np.iinfo(dt) if np.issubdtype(dt, np.integer) else None
                                hi = min(info.max, 1000) if info else 1000
                                lo = max(info.min, -1000) if info else -1000
                                data = rng.integers(lo, hi, size=shape).astype(dt) if info else \
                                    rng.normal(size=shape).astype(dt)
                                hdr = (nib.Nifti1Header if version == 1 else nib.Nifti2Header)(endianness=endian)
                                img = cls(data, None, hdr)
                                img.set_sform(affine if form == "sform" else None, code=1 if form == "sform" else 0)
                                img.set_qform(affine if form == "qform" else None, code=1 if form == "qform" else 0)
                                img.header.set_zooms((0.8, 0.9, 2.5) + ((1.0,) if len(shape) == 4 else ()))
                                if dt == np.int16:
                                    img.header.set_slope_inter(2.5, -100.0)
                                path = os.path.join(tmp, f"v{version}_{np.dtype(dt).name}_{'be' if endian == '>' else 'le'}_{form}{ext}")
                                nib.save(img, path)
                                with self.subTest(file=os.path.basename(path)):
                                    got = self.compare(path)
                                    self.assertEqual(got["nifti_version"], version)
                                    self.assertEqual(got["big_endian"], endian == ">")
                                n += 1
            self.assertEqual(n, 2 * len(dtypes) * 2 * 2 * 3)


if __name__ == "__main__":
    unittest.main()
