#!/usr/bin/python3
"""Throughput of the DICOM gateway's two ways in (issue 31): a 300-instance CT
series (the phantom's slices repeated, new UIDs, about 158 MB) by DICOMweb
STOW-RS (one chunked POST, Python's urllib) and by C-STORE (DCMTK's storescu,
one association, 128 KiB PDUs), alternated three times, into one gateway on
loopback (no service: the series are only spooled).
  deploy/bench-gateway-dicomweb.py BUILD_DIR     (run from a scratch directory)
"""
import hashlib, os, socket, subprocess, sys, time, urllib.request
import pydicom
from pydicom.uid import generate_uid
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
build = sys.argv[1]
subprocess.run([os.path.join(build, "tools", "upp-phantom"), "--seed", "7", "-o", "ct.nii.gz", "--dicom", "src"],
               check=True, capture_output=True)
src = sorted(os.listdir("src"))
def make(dirname):
    os.makedirs(dirname, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    for i in range(300):
        ds = pydicom.dcmread(os.path.join("src", src[i % len(src)]))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(os.path.join(dirname, f"{i:04d}.dcm"))
    return dirname
key = "bench-key"
open("keys", "w").write(f"b {hashlib.sha256(key.encode()).hexdigest()} store\n")
dport, wport = free_port(), free_port()
open("gw.textproto", "w").write(f"""
listener {{ ae_title: "UNETRPP" port: {dport} max_pdu_bytes: 131072 min_free_spool_bytes: 1048576 }}
dicomweb {{ port: {wport} address: "127.0.0.1" auth {{ api_keys_file: "keys" }} }}
spool_dir: "spool"
quiet_period_seconds: 100000
service {{ target: "127.0.0.1:1" }}
destination {{ host: "127.0.0.1" port: 1 ae_title: "X" }}
rules {{ name: "r" }}
metrics_address: "off"
""")
gw = subprocess.Popen([os.path.join(build, "gateway", "unetrpp-dicom-gateway"), "--config", "gw.textproto"], stdout=open("gw.log", "wb"), stderr=subprocess.STDOUT)
time.sleep(2)
def stow(d):
    b = "benchboundary"
    files = sorted(os.listdir(d))
    def body():
        for f in files:
            yield f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield open(os.path.join(d, f), "rb").read()
            yield b"\r\n"
        yield f"--{b}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{wport}/studies", data=body(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": f'multipart/related; type="application/dicom"; boundary={b}',
        "Transfer-Encoding": "chunked"})
    with urllib.request.urlopen(req, timeout=600) as r:
        assert r.status == 200, r.status
def cstore(d):
    subprocess.run(["storescu", "-aec", "UNETRPP", "-aet", "BENCH", "--max-pdu", "131072", "127.0.0.1", str(dport)]
                   + [os.path.join(d, f) for f in sorted(os.listdir(d))], check=True, capture_output=True)
size = None
results = {"stow": [], "cstore": []}
for round_ in range(3):
    for kind, fn in (("cstore", cstore), ("stow", stow)):
        d = make(f"data-{kind}-{round_}")
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        t = time.time(); fn(d); results[kind].append(time.time() - t)
gw.terminate(); gw.wait()
print("instances 300, bytes", size)
for k, v in results.items():
    print(k, ["%.2f" % x for x in v], "median %.2f s, %.0f MB/s" % (sorted(v)[1], size / sorted(v)[1] / 1e6))
