#!/usr/bin/python3
"""Throughput of the DICOM gateway's two ways in (issue 31): a 300-instance CT
series (the phantom's slices repeated, new UIDs, about 158 MB) by DICOMweb
STOW-RS (one chunked POST, Python's urllib) and by C-STORE (DCMTK's storescu,
one association, 128 KiB PDUs), alternated three times, into one gateway on
loopback (no service: the series are only spooled). Each round also sends
the series with storescu to DCMTK's own storescp (writing files, as the
gateway does): what the same tool gets from a stock DCMTK receiver in the
same run, since the machine's load moves between runs. With --before BINARY
a second gateway (an older build) takes the same C-STORE series in the same
rounds, for a before/after on the same machine at the same time.
  deploy/bench-gateway-dicomweb.py BUILD_DIR [--before GATEWAY_BINARY]  (from a scratch directory)
"""
import hashlib, os, shutil, socket, subprocess, sys, time, urllib.request
import pydicom
from pydicom.uid import generate_uid
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
build = sys.argv[1]
before = sys.argv[sys.argv.index("--before") + 1] if "--before" in sys.argv else None
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
def start_gateway(binary, name):
    dport, wport = free_port(), free_port()
    open(f"{name}.textproto", "w").write(f"""
listener {{ ae_title: "UNETRPP" port: {dport} max_pdu_bytes: 131072 min_free_spool_bytes: 1048576 }}
dicomweb {{ port: {wport} address: "127.0.0.1" auth {{ api_keys_file: "keys" }} }}
spool_dir: "spool-{name}"
quiet_period_seconds: 100000
service {{ target: "127.0.0.1:1" }}
destination {{ host: "127.0.0.1" port: 1 ae_title: "X" }}
rules {{ name: "r" }}
metrics_address: "off"
""")
    return subprocess.Popen([binary, "--config", f"{name}.textproto"], stdout=open(f"{name}.log", "wb"),
                            stderr=subprocess.STDOUT), dport, wport
gw, dport, wport = start_gateway(os.path.join(build, "gateway", "unetrpp-dicom-gateway"), "gw")
procs = [gw]
if before:
    gw_before, before_port, _ = start_gateway(before, "gw-before")
    procs.append(gw_before)
floor_port = free_port()
os.makedirs("storescp-out", exist_ok=True)
procs.append(subprocess.Popen(["storescp", "-aet", "FLOOR", "--max-pdu", "131072", "-od", "storescp-out", str(floor_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
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
def storescu(d, aec, port):
    subprocess.run(["storescu", "-aec", aec, "-aet", "BENCH", "--max-pdu", "131072", "127.0.0.1", str(port)]
                   + [os.path.join(d, f) for f in sorted(os.listdir(d))], check=True, capture_output=True)
ways = [("cstore", lambda d: storescu(d, "UNETRPP", dport)), ("stow", stow)]
if before:
    ways.append(("cstore-before", lambda d: storescu(d, "UNETRPP", before_port)))
ways.append(("storescu->storescp", lambda d: storescu(d, "FLOOR", floor_port)))
size = None
results = {kind: [] for kind, _ in ways}
for round_ in range(3):
    for i, (kind, fn) in enumerate(ways):
        d = make(f"data-{i}-{round_}")
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        t = time.time(); fn(d); results[kind].append(time.time() - t)
        shutil.rmtree(d)  # the disk holds the spools' copies already
for p in procs:
    p.terminate(); p.wait()
print("instances 300, bytes", size)
for k, v in results.items():
    print(k, ["%.2f" % x for x in v], "median %.2f s, %.0f MB/s" % (sorted(v)[1], size / sorted(v)[1] / 1e6))
