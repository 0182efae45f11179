"""upp-client as a new user meets it (issue 32): a server that starts after
the client, TLS on one side only, outputs that cannot be written, a DICOM
folder with a README in it or two series of one study, and only the outputs
asked for on the wire. Runs the binary against the real server (the default
model)."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import pydicom
from pydicom.uid import generate_uid

from server_process import ServerProcess, free_port

CLIENT = os.environ["UPP_CLIENT"]
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PHANTOM = os.environ["UPP_PHANTOM"]


def upp_client(*args, timeout=120):
    start = time.monotonic()
    proc = subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


class UppClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upp-client-test-")
        cls.ct, cls.dicom = (os.path.join(cls.tmp, name) for name in ("ct.nii.gz", "dicom"))
        subprocess.run([PHANTOM, "--seed", "4", "--spacing", "2", "2", "5", "--fov", "240", "200", "100", "-o",
                        cls.ct, "--dicom", cls.dicom], check=True, capture_output=True)
        cls.server = ServerProcess().__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start_server_later(self, port, seconds, **kwargs):
        server = ServerProcess(port=port, **kwargs)
        timer = threading.Timer(seconds, server.start)
        timer.start()
        self.addCleanup(lambda: (timer.cancel(), server.__exit__(None, None, None)))
        return server

    def test_a_client_started_before_the_server_waits_for_it(self):
        port = free_port()
        self.start_server_later(port, 2)
        out = self.path("late.nii.gz")
        rc, text, seconds = upp_client("--server", f"127.0.0.1:{port}", "segment", self.ct, "-o", out)
        self.assertEqual(rc, 0, text)
        self.assertTrue(os.path.getsize(out) > 0)
        self.assertGreater(seconds, 1.5)  # it did wait

    def test_retries_reconnect_to_a_server_that_came_back(self):
        # No initial wait: the first attempt fails (connection refused) and
        # the retries must reach the server once it is up, not stay stuck
        # in gRPC's reconnect backoff.
        port = free_port()
        self.start_server_later(port, 2)
        rc, text, seconds = upp_client("--server", f"127.0.0.1:{port}", "--wait", "0", "segment", self.ct,
                                       "--attempts", "8", "--json", self.path("retry.json"))
        self.assertEqual(rc, 0, text)
        self.assertLess(seconds, 30)

    def test_tls_on_one_side_only_is_named_not_retried(self):
        cert, key = self.path("server.pem"), self.path("server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1", "-keyout", key,
                        "-out", cert], check=True, capture_output=True)
        tls = ServerProcess(config_text=f'tls {{ cert_file: "{cert}" key_file: "{key}" }}\n',
                            client_kwargs={"tls_ca": cert}).__enter__()
        self.addCleanup(tls.__exit__, None, None, None)
        rc, text, seconds = upp_client("--server", tls.address, "segment", self.ct)
        self.assertEqual(rc, 1, text)
        self.assertIn("speaks TLS", text)
        self.assertIn("--tls-ca", text)
        self.assertLess(seconds, 8)  # found out, not waited out
        rc, text, _ = upp_client("--server", self.server.address, "--tls-ca", cert, "models")
        self.assertEqual(rc, 1, text)
        self.assertIn("does not speak TLS", text)
        rc, text, _ = upp_client("--server", tls.address, "--tls-ca", cert, "models")
        self.assertEqual(rc, 0, text)

    def test_outputs_that_cannot_be_written_fail_before_anything_is_sent(self):
        nowhere = "127.0.0.1:1"  # nothing listens: any attempt to send would wait or fail otherwise
        for flag, path in (("-o", "/nonexistent/l.nii.gz"), ("--json", "/nonexistent/v.json"),
                           ("--png", self.tmp)):
            rc, text, seconds = upp_client("--server", nowhere, "segment", self.ct, flag, path)
            self.assertEqual(rc, 1, text)
            self.assertIn("cannot write", text)
            self.assertLess(seconds, 2)

    def test_a_missing_input_is_named_before_anything_is_sent(self):
        rc, text, seconds = upp_client("--server", "127.0.0.1:1", "segment", self.path("no-such-ct.nii.gz"))
        self.assertEqual(rc, 1, text)
        self.assertIn("no-such-ct.nii.gz: no such file or folder", text)
        self.assertLess(seconds, 2)

    def test_dicom_files_named_one_by_one_are_a_series(self):
        files = [os.path.join(self.dicom, f) for f in sorted(os.listdir(self.dicom))]
        rc, text, _ = upp_client("--server", self.server.address, "segment", *files, "--json",
                                 self.path("files.json"))
        self.assertEqual(rc, 0, text)
        with open(self.path("files.json")) as f:
            self.assertEqual(json.load(f)["input"]["instances_used"], len(files))

    def test_only_the_outputs_asked_for_are_fetched(self):
        rc, text, _ = upp_client("--server", self.server.address, "segment", self.ct, "-o",
                                 self.path("only.nii.gz"), "--json", self.path("only.json"))
        self.assertEqual(rc, 0, text)
        with open(self.path("only.json")) as f:
            report = json.load(f)
        self.assertEqual(list(report["outputs"]), ["OUTPUT_KIND_NIFTI_LABELS"])
        self.assertEqual(report["input"]["instances_used"], 1)

    def test_a_dicom_folder_with_a_readme_is_segmented_and_the_readme_skipped(self):
        folder = self.path("with-readme")
        shutil.copytree(self.dicom, folder)
        with open(os.path.join(folder, "README.txt"), "w") as f:
            f.write("Exported from the PACS on request #123.\n")
        rc, text, _ = upp_client("--server", self.server.address, "segment", folder, "--json",
                                 self.path("readme.json"))
        self.assertEqual(rc, 0, text)
        self.assertIn("skipped 1 file(s) that are not DICOM", text)
        with open(self.path("readme.json")) as f:
            report = json.load(f)
        self.assertEqual(report["input"]["instances_used"], len(os.listdir(self.dicom)))
        uid = pydicom.dcmread(os.path.join(self.dicom, sorted(os.listdir(self.dicom))[0])).SeriesInstanceUID
        self.assertEqual(report["input"]["series_instance_uid"], uid)

    def test_an_empty_file_in_a_dicom_folder_is_an_error_not_skipped(self):
        # A slice truncated to nothing at the series' end would shorten the
        # volume without a gap to notice.
        folder = self.path("with-empty")
        shutil.copytree(self.dicom, folder)
        open(os.path.join(folder, "zz-last-slice.dcm"), "wb").close()
        rc, text, seconds = upp_client("--server", "127.0.0.1:1", "segment", folder)
        self.assertEqual(rc, 1, text)
        self.assertIn("zz-last-slice.dcm is empty", text)
        self.assertLess(seconds, 2)

    def test_two_series_of_one_study_need_the_series_named(self):
        folder = self.path("two-series")
        shutil.copytree(self.dicom, folder)
        files = sorted(os.listdir(self.dicom))
        first_uid = pydicom.dcmread(os.path.join(self.dicom, files[0])).SeriesInstanceUID
        second_uid = generate_uid()
        for name in files[:3]:  # a second, smaller series of the same study and patient
            ds = pydicom.dcmread(os.path.join(self.dicom, name))
            ds.SeriesInstanceUID = second_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(os.path.join(folder, "second-" + name))
        rc, text, _ = upp_client("--server", self.server.address, "segment", folder)
        self.assertEqual(rc, 2, text)
        self.assertIn("2 image series of one study", text)
        self.assertIn("--series", text)
        self.assertRegex(text, r"file #\d+ is " + folder)  # the server's file numbers as paths
        rc, text, _ = upp_client("--server", self.server.address, "segment", folder, "--series", first_uid,
                                 "--json", self.path("named.json"))
        self.assertEqual(rc, 0, text)
        self.assertIn("left out 3 instance(s): another series", text)
        with open(self.path("named.json")) as f:
            self.assertEqual(json.load(f)["input"]["skipped"], {"another series": 3})


class ModelManagementTest(unittest.TestCase):
    """load-model and unload-model (issue 29): an admin key changes the
    serving version, a user key is refused (exit 7), an unknown version is
    refused (exit 2) and changes nothing."""

    ADMIN, USER = "upp-client-admin-8d1c", "upp-client-user-51f0"

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upp-client-manage-")
        keys = os.path.join(cls.tmp, "keys.txt")
        with open(keys, "w") as f:
            for name, key, role in (("admin", cls.ADMIN, "admin"), ("user", cls.USER, "user")):
                f.write(f"{name} {hashlib.sha256(key.encode()).hexdigest()} {role}\n")
        weights = os.path.join(SOURCE, "model", "weights", "phantom_ct_v1.safetensors")
        config = (f"auth {{ api_keys_file: '{keys}' }}\n"
                  f"models {{ name: 'ct' versions {{ version: '1' weights: '{weights}' }} "
                  f"versions {{ version: '2' weights: '{weights}' }} version_policy {{ specific: '1' }} }}\n")
        cls.server = ServerProcess(config_text=config).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def client(self, key, *args):
        return upp_client("--server", self.server.address, "--token", key, *args)

    def test_an_admin_loads_and_unloads_versions_a_user_may_not(self):
        rc, text, _ = self.client(self.USER, "load-model", "ct", "--version", "2")
        self.assertEqual(rc, 7, text)
        self.assertIn("PERMISSION_DENIED", text)
        rc, text, _ = self.client(self.ADMIN, "load-model", "ct", "--version", "7")
        self.assertEqual(rc, 2, text)
        self.assertIn("NOT_FOUND", text)

        rc, text, _ = self.client(self.ADMIN, "load-model", "ct", "--version", "2", "--keep-previous")
        self.assertEqual(rc, 0, text)
        self.assertRegex(text, r"ct  version 2 ")
        self.assertRegex(text, r"version 2 \(default\): ready since ")
        self.assertRegex(text, r"version 1: ready since ")  # kept beside it

        rc, text, _ = self.client(self.ADMIN, "unload-model", "ct", "1")
        self.assertEqual(rc, 0, text)
        self.assertRegex(text, r"version 1: (unloading|unloaded) since ")
        rc, text, _ = self.client(self.USER, "models")
        self.assertEqual(rc, 0, text)
        self.assertRegex(text, r"ct \(default\)  version 2 ")
        rc, text, _ = self.client(self.ADMIN, "unload-model", "ct")  # the version is required
        self.assertEqual(rc, 1, text)


if __name__ == "__main__":
    unittest.main()
