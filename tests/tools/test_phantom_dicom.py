"""The phantom generator's DICOM CT series: pydicom reads it with the NIfTI
image's voxel values and geometry, and dicom3tools' dciodvfy finds no errors."""
import os
import shutil
import subprocess
import tempfile
import unittest

import nibabel
import numpy
import pydicom


class PhantomDicomTest(unittest.TestCase):
    def test_series_matches_the_nifti_and_validates(self):
        with tempfile.TemporaryDirectory() as tmp:
            nifti, dicom = os.path.join(tmp, "ct.nii.gz"), os.path.join(tmp, "dicom")
            subprocess.run([os.environ["UPP_PHANTOM"], "--seed", "4", "--spacing", "2", "2", "5", "--fov", "300",
                            "260", "40", "-o", nifti, "--dicom", dicom], check=True, capture_output=True)
            image = numpy.asarray(nibabel.load(nifti).dataobj)  # (x, y, z)
            files = sorted(os.listdir(dicom))
            self.assertEqual(len(files), image.shape[2])
            series, positions = set(), []
            for k, name in enumerate(files):
                d = pydicom.dcmread(os.path.join(dicom, name))
                self.assertEqual(d.Modality, "CT")
                self.assertEqual(str(d.PatientName), "PHANTOM^SYNTHETIC")
                hu = d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)  # (rows = y, columns = x)
                numpy.testing.assert_array_equal(hu, image[:, :, k].T)
                series.add(d.SeriesInstanceUID)
                positions.append(float(d.ImagePositionPatient[2]))
                self.assertAlmostEqual(float(d.PixelSpacing[0]), 2.0, places=4)
            self.assertEqual(len(series), 1)
            numpy.testing.assert_allclose(numpy.diff(positions), 5.0, atol=1e-4)
            if shutil.which("dciodvfy"):
                out = subprocess.run(["dciodvfy", os.path.join(dicom, files[0])], capture_output=True, text=True)
                errors = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith("Error")]
                self.assertEqual(errors, [])


if __name__ == "__main__":
    unittest.main()
