"""Our DICOM series reader (via upp-volume-info DIR) against pydicom, an
independent reader, on pydicom's own test files in many transfer syntaxes, and
on series assembled from them (shuffled order, gaps, duplicates, mixed series).

Run by CTest: UPP_VOLUME_INFO=<path> python3 -m unittest test_dicom_vs_pydicom
"""
import copy
import json
import os
import random
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

TOOL = os.environ.get("UPP_VOLUME_INFO", "upp-volume-info")


def run(directory):
    proc = subprocess.run([TOOL, directory], capture_output=True, text=True)
    return proc.returncode, (json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr)


def modality_values(ds):
    arr = ds.pixel_array.astype(np.float64)
    return arr * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))


class DicomVsPydicom(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def single(self, name):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        shutil.copy(get_testdata_file(name), d)
        return run(d)

    def alone(self, name, content):
        """Runs the tool on a directory holding one file: a pydicom dataset or bytes."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        path = os.path.join(d, "x.dcm")
        if isinstance(content, (bytes, bytearray)):
            with open(path, "wb") as f:
                f.write(bytes(content))
        else:
            content.save_as(path)
        return run(d)

    def test_transfer_syntaxes_of_one_mr_slice(self):
        # Uncompressed MR_small is the truth for every lossless variant of it.
        ref = modality_values(pydicom.dcmread(get_testdata_file("MR_small.dcm")))
        outcomes = {}
        for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                     "MR_small_expb.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                     "MR_small_padded.dcm", "MR_small_jp2klossless.dcm"):
            with self.subTest(file=name):
                rc, got = self.single(name)
                self.assertEqual(rc, 0, got)
                self.assertEqual(got["size"], [64, 64, 1])
                self.assertAlmostEqual(got["sum"], ref.sum(), delta=1e-6 * abs(ref.sum()) + 1e-3)
                idx = np.arange(ref.size) % 9973
                self.assertAlmostEqual(got["weighted_sum"], (ref.reshape(-1) * idx).sum(),
                                       delta=1e-6 * abs((ref.reshape(-1) * idx).sum()) + 1e-2)
                outcomes[name] = "decoded, equal to pydicom"
        for k, v in outcomes.items():
            print(f"{k}: {v}")

    def test_jpeg2000_ct_slices_and_bad_codestreams(self):
        # Two CT slices in JPEG 2000: 693_J2KI is irreversible at 1.5 kB
        # (ringing around its -3024 HU padding), J2K_pixelrep_mismatch has
        # unsigned samples while PixelRepresentation says signed (pydicom's
        # README). pydicom cannot decode these here (no JPEG 2000 plugin), so
        # the check is Hounsfield-unit plausibility: mostly air and padding
        # (mean below 0; read as unsigned, air would be +7192 and the mean
        # +4438).
        for name in ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"):
            with self.subTest(file=name):
                rc, got = self.single(name)
                self.assertEqual(rc, 0, got)
                self.assertEqual(got["size"], [512, 512, 1])
                self.assertGreaterEqual(got["min"], -4096)
                self.assertLessEqual(got["max"], 4095)
                self.assertGreater(got["max"] - got["min"], 1500)
                mean = got["sum"] / (512 * 512)
                self.assertTrue(-1500 <= mean <= 0, mean)
        # Rows that disagree with the codestream, and a damaged codestream:
        # refused with the reason, no crash.
        ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
        ds.Rows = 32
        rc, err = self.alone("rows", ds)
        self.assertNotEqual(rc, 0)
        self.assertIn("JPEG 2000 frame is 64 x 64, the DICOM header says 64 x 32", err)
        with open(get_testdata_file("MR_small_jp2klossless.dcm"), "rb") as f:
            data = bytearray(f.read())
        start = data.find(b"\xff\x4f\xff\x51")  # the codestream's SOC + SIZ markers
        self.assertGreater(start, 0)
        # JPEG 2000 has no checksum: damaged code-blocks decode to wrong
        # values silently (OpenJPEG, like every decoder). A damaged header
        # (the SIZ segment: image and tile sizes) is caught.
        for i in range(start + 6, start + 30):
            data[i] ^= 0xA5
        rc, err = self.alone("damaged", data)
        self.assertNotEqual(rc, 0)
        self.assertIn("INVALID_ARGUMENT", err)
        self.assertIn("JPEG 2000", err)
        # A colour JPEG 2000 image without patient geometry is refused.
        rc, err = self.single("GDCMJ2K_TextGBR.dcm")
        self.assertNotEqual(rc, 0)

    @unittest.skipUnless(shutil.which("dcmcjpeg"), "dcmtk command-line tools not installed")
    def test_series_compressed_by_dcmtk_tools(self):
        # Compressed copies made by DCMTK's own encoders (dcmtk package): lossless ones must
        # decode to exactly pydicom's values of the uncompressed original, lossy ones closely.
        src = get_testdata_file("CT_small.dcm")
        ref = modality_values(pydicom.dcmread(src)).sum()
        cases = [("deflated", ["dcmconv", "+td"], 0.0),
                 ("jpeg-lossless-sv1", ["dcmcjpeg", "+e1"], 0.0),
                 ("jpeg-ls-lossless", ["dcmcjpls"], 0.0),
                 ("rle", ["dcmcrle"], 0.0),
                 ("jpeg-extended-lossy", ["dcmcjpeg", "+ee"], 0.02),
                 ("jpeg-baseline-lossy", ["dcmcjpeg", "+eb"], 0.1)]
        for name, cmd, tolerance in cases:
            with self.subTest(codec=name):
                d = os.path.join(self.tmp, name)
                os.makedirs(d)
                subprocess.run(cmd + [src, os.path.join(d, "x.dcm")], check=True,
                               capture_output=True)
                rc, got = run(d)
                self.assertEqual(rc, 0, got)
                self.assertEqual(got["size"], [128, 128, 1])
                self.assertLessEqual(abs(got["sum"] - ref), tolerance * abs(ref) + 1e-3, name)

    def test_ct_small_values_and_geometry(self):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        rc, got = self.single("CT_small.dcm")
        self.assertEqual(rc, 0, got)
        ref = modality_values(ds)
        self.assertAlmostEqual(got["sum"], ref.sum(), delta=1e-6 * abs(ref.sum()))
        np.testing.assert_allclose(got["origin"], [float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose(got["spacing"][:2], [float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])])
        iop = [float(v) for v in ds.ImageOrientationPatient]
        direction = np.array(got["direction"]).reshape(3, 3)
        np.testing.assert_allclose(direction[:, 0], iop[:3], atol=1e-6)
        np.testing.assert_allclose(direction[:, 1], iop[3:], atol=1e-6)

    def read_grid(self, d, size, spacing_z, origin):
        """Reads folder `d` with the C++ reader, checks the grid it reports and returns the report."""
        rc, got = run(d)
        self.assertEqual(rc, 0, got)
        self.assertEqual(got["size"], size)
        self.assertAlmostEqual(got["spacing"][2], spacing_z, places=4)
        np.testing.assert_allclose(got["origin"], origin, atol=1e-4)
        return got

    def write_series(self, positions, order=None, uid=None, base="CT_small.dcm"):
        src = pydicom.dcmread(get_testdata_file(base))
        uid = uid or generate_uid()
        d = tempfile.mkdtemp(dir=self.tmp)
        iop = np.array([float(v) for v in src.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        ipp0 = np.array([float(v) for v in src.ImagePositionPatient])
        order = order if order is not None else list(range(len(positions)))
        for k in order:
            ds = copy.deepcopy(src)
            ds.SeriesInstanceUID = uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = len(positions) - k  # deliberately the wrong order
            ds.ImagePositionPatient = [float(x) for x in ipp0 + positions[k] * normal]
            ds.save_as(os.path.join(d, f"f{random.random():.6f}.dcm"))
        return d, ipp0, normal

    def test_instances_of_two_patients_are_refused_without_naming_them(self):
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        shutil.copy(get_testdata_file("MR_small.dcm"), d)  # another patient, another study
        proc = subprocess.run([TOOL, "--any-modality", d], capture_output=True, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("belong to 2 patients", proc.stderr)
        self.assertIn("3, 1", proc.stderr)  # instances per patient
        for identifier in ("1CT1", "4MR1", "1.3.6.1.4.1.5962"):
            self.assertNotIn(identifier, proc.stderr)

    def test_a_localizer_and_another_studys_rt_plan_leave_the_series_alone(self):
        # What a CT export holds beside its axial series: a scout (CT,
        # ImageType LOCALIZER) and objects of other studies without pixels.
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        scout = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        scout.SeriesInstanceUID, scout.SOPInstanceUID = generate_uid(), generate_uid()
        scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        scout.save_as(os.path.join(d, "scout.dcm"))
        shutil.copy(get_testdata_file("rtplan.dcm"), d)  # another patient's, another study's
        rc, got = run(d)
        self.assertEqual(rc, 0, got)
        self.assertEqual(got["size"], [128, 128, 3])

    def test_two_studies_of_one_patient_are_refused(self):
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        other = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        other.StudyInstanceUID, other.SeriesInstanceUID = generate_uid(), generate_uid()
        other.save_as(os.path.join(d, "other-study.dcm"))
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("belong to 2 studies", err)

    def test_two_series_of_one_study_need_the_series_named(self):
        uid = generate_uid()
        d, _, _ = self.write_series([0.0, 2.5, 5.0, 7.5], uid=uid)
        second, _, _ = self.write_series([0.0, 5.0])
        for name in os.listdir(second):
            shutil.copy(os.path.join(second, name), d)
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("2 image series of one study", err)
        self.assertIn("4 instances from file #", err)
        self.assertNotIn(uid, err)
        proc = subprocess.run([TOOL, "--series", uid, d], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout)["size"], [128, 128, 4])

    def test_a_text_file_is_named_as_not_dicom(self):
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        with open(os.path.join(d, "zz-README.txt"), "w") as f:
            f.write("export notes: " + "x" * 200)
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertRegex(err, r"file #\d+ is not a DICOM file")
        self.assertNotIn("claims", err)

    def test_series_is_sorted_by_position_not_instance_number(self):
        positions = [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]
        order = [3, 0, 5, 1, 4, 2]
        d, ipp0, normal = self.write_series(positions, order)
        # A non-image file of the same patient and study in the same request.
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        plan = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
        plan.PatientID, plan.StudyInstanceUID = ct.PatientID, ct.StudyInstanceUID
        plan.save_as(os.path.join(d, "plan.dcm"))
        got = self.read_grid(d, [128, 128, 6], 2.5, ipp0)
        ref = modality_values(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
        self.assertAlmostEqual(got["sum"], 6 * ref.sum(), delta=1e-6 * abs(6 * ref.sum()))

    def test_gaps_duplicates_and_mixed_orientation_are_refused(self):
        d, _, _ = self.write_series([0.0, 2.5, 7.5, 10.0])
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("uneven slice spacing", err)
        d, _, _ = self.write_series([0.0, 2.5, 2.5, 5.0])
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("same position", err)
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        f = sorted(os.listdir(d))[0]
        ds = pydicom.dcmread(os.path.join(d, f))
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.save_as(os.path.join(d, f))
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertIn("orientations", err)

    def test_multiframe_enhanced_ct_is_read_as_a_volume(self):
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence
        src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ref = modality_values(src)
        iop = [float(v) for v in src.ImageOrientationPatient]
        normal = np.cross(iop[:3], iop[3:])
        ipp0 = np.array([float(v) for v in src.ImagePositionPatient])
        ds = copy.deepcopy(src)
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleSlope", "RescaleIntercept"):
            delattr(ds, tag)
        order = [2, 0, 1]  # frames stored out of spatial order: stored frame j lies at position order[j]
        ds.NumberOfFrames = 3
        # Each frame its own values (+100 per stored frame), so a frame read
        # for another changes the sums below.
        stored = [src.pixel_array.astype("<i2") + 100 * j for j in range(3)]
        ds.PixelData = b"".join(a.astype("<i2").tobytes() for a in stored)
        shared = Dataset()
        o, m, t = Dataset(), Dataset(), Dataset()
        o.ImageOrientationPatient = iop
        m.PixelSpacing = src.PixelSpacing
        m.SliceThickness = 2.0
        t.RescaleSlope, t.RescaleIntercept, t.RescaleType = 1, float(src.RescaleIntercept), "HU"
        shared.PlaneOrientationSequence = Sequence([o])
        shared.PixelMeasuresSequence = Sequence([m])
        shared.PixelValueTransformationSequence = Sequence([t])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
        frames = []
        for k in order:
            f, pos = Dataset(), Dataset()
            pos.ImagePositionPatient = [float(x) for x in ipp0 + 2.0 * k * normal]
            f.PlanePositionSequence = Sequence([pos])
            frames.append(f)
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        d = os.path.join(self.tmp, "enhanced")
        os.makedirs(d)
        ds.save_as(os.path.join(d, "x.dcm"))
        got = self.read_grid(d, [128, 128, 3], 2.0, ipp0)
        slope, intercept = float(getattr(src, "RescaleSlope", 1)), float(src.RescaleIntercept)
        volume = np.stack([stored[order.index(k)] for k in range(3)]).astype(np.float64) * slope + intercept
        self.assertAlmostEqual(got["sum"], volume.sum(), delta=1e-6 * abs(volume.sum()))
        flat = volume.reshape(-1)
        weighted = (flat * (np.arange(flat.size) % 9973)).sum()
        self.assertAlmostEqual(got["weighted_sum"], weighted, delta=1e-6 * abs(weighted) + 1e-2)
        # A SEG on it references each frame by number, and passes dciodvfy.
        seg_path = os.path.join(self.tmp, "mf_seg.dcm")
        proc = subprocess.run([TOOL, d, "--write-seg", seg_path, "--label-mod", "2"],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seg = pydicom.dcmread(seg_path)
        frames = set()
        for fg in seg.PerFrameFunctionalGroupsSequence:
            src_item = fg.DerivationImageSequence[0].SourceImageSequence[0]
            self.assertEqual(src_item.ReferencedSOPInstanceUID, ds.SOPInstanceUID)
            frames.add(int(src_item.ReferencedFrameNumber))
        self.assertEqual(frames, {1, 2, 3})
        if shutil.which("dciodvfy"):
            out = subprocess.run(["dciodvfy", seg_path], capture_output=True, text=True)
            self.assertEqual([l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")], [])

    def test_dicom_seg_frames_land_on_their_source_slices(self):
        positions = [0.0, 2.5, 5.0]
        d, ipp0, normal = self.write_series(positions, [2, 0, 1])
        seg_path = os.path.join(self.tmp, "seg.dcm")
        mod = 4
        proc = subprocess.run([TOOL, d, "--write-seg", seg_path, "--label-mod", str(mod)],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        seg = pydicom.dcmread(seg_path)
        self.assertEqual(seg.Modality, "SEG")
        # Source slices by z, and the labels the tool derived from them.
        sources = sorted((pydicom.dcmread(os.path.join(d, f)) for f in os.listdir(d)),
                         key=lambda x: float(np.dot([float(v) for v in x.ImagePositionPatient], normal)))
        self.assertEqual(seg.StudyInstanceUID, sources[0].StudyInstanceUID)
        self.assertEqual(seg.FrameOfReferenceUID, sources[0].FrameOfReferenceUID)
        labels = [np.abs(np.round(modality_values(x))).astype(np.int64) % mod for x in sources]
        expected = {(l, k): (labels[k] == l) for l in range(1, mod) for k in range(len(sources))
                    if (labels[k] == l).any()}
        self.assertEqual(int(seg.NumberOfFrames), len(expected))  # empty frames left out
        self.assertEqual(len(seg.SegmentSequence), mod - 1)
        self.assertEqual(seg.SegmentSequence[0].SegmentLabel, "label 1")
        self.assertEqual(seg.SegmentSequence[0].SegmentAlgorithmName, "UNETR++")
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns))
        by_sop = {x.SOPInstanceUID: k for k, x in enumerate(sources)}
        for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
            label = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            ref = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            k = by_sop[ref]
            np.testing.assert_allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                                       [float(v) for v in sources[k].ImagePositionPatient], atol=1e-4)
            np.testing.assert_array_equal(frames[i].astype(bool), expected[(label, k)])
        # dicom3tools' dciodvfy, an independent validator of the Segmentation IOD.
        if shutil.which("dciodvfy"):
            out = subprocess.run(["dciodvfy", seg_path], capture_output=True, text=True)
            errors = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
            self.assertEqual(errors, [])

    def test_voxel_limit_and_colour_images_are_refused(self):
        d, _, _ = self.write_series([0.0, 2.5, 5.0])
        proc = subprocess.run([TOOL, d, "--max-voxels", str(128 * 128 * 2)], capture_output=True, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("RESOURCE_EXHAUSTED", proc.stderr)
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PhotometricInterpretation = "RGB"
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(128 * 128 * 3)
        rc, err = self.alone("rgb", ds)
        self.assertNotEqual(rc, 0)
        self.assertIn("UNIMPLEMENTED", err)
        self.assertIn("'RGB'", err)

    def test_bad_files_get_clear_errors_without_patient_data(self):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        name = str(ds.PatientName)
        d = os.path.join(self.tmp, "bad")
        os.makedirs(d)
        with open(get_testdata_file("CT_small.dcm"), "rb") as f:
            data = f.read()
        with open(os.path.join(d, "truncated.dcm"), "wb") as f:
            f.write(data[: len(data) // 2])
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        self.assertTrue(err.strip())
        self.assertNotIn(name, err)
        with open(os.path.join(d, "truncated.dcm"), "wb") as f:
            f.write(b"\x00" * 50)
        rc, err = run(d)
        self.assertNotEqual(rc, 0)
        rc, err = self.single("rtplan.dcm")
        self.assertNotEqual(rc, 0)
        self.assertIn("none of the DICOM files is an image", err)


if __name__ == "__main__":
    unittest.main()
