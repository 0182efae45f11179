"""unetrpp-dicom-gateway against senders it must not trust, driven by
DCMTK's storescu (no service, no PACS needed).

- Crash loop: a series whose processing kills the gateway (SIGKILL while it
  is in flight, as the kernel's OOM killer would) is counted before the
  work and quarantined at the second start after such a death, never
  processed again.
- Allow-list: an association from a calling AE title or an address not in
  listener.allowed_peers is rejected when it is requested (nothing is
  spooled) and counted; a listed peer stores.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

GATEWAY = os.environ.get("UPP_GATEWAY", "")
CT_SMALL = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    """predicate()'s first true value, polled every 0.1 s for `timeout` s."""
    for _ in range(int(timeout * 10)):
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def files_under(path):
    return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]


@unittest.skipUnless(GATEWAY and shutil.which("storescu") and os.path.exists(CT_SMALL),
                     "needs UPP_GATEWAY, storescu and pydicom's test data")
class HostileSenderTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="upp-gw-hostile-")
        self.spool = os.path.join(self.dir, "spool")
        self.port = free_port()
        self.metrics_port = free_port()
        # A "service" that accepts connections and never answers: a series
        # stays in flight until the gateway is killed.
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(16)
        self.gateway = None

    def tearDown(self):
        if self.gateway and self.gateway.poll() is None:
            self.gateway.kill()
            self.gateway.wait()
        self.silent.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, peers):
        config = os.path.join(self.dir, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {self.port} {peers} }}
spool_dir: "{self.spool}"
quiet_period_seconds: 0.5
service {{ target: "127.0.0.1:{self.silent.getsockname()[1]}" deadline_seconds: 600 }}
destination {{ host: "127.0.0.1" port: 1 ae_title: "PACS" }}
rules {{ name: "ct" modalities: "CT" }}
metrics_address: "127.0.0.1:{self.metrics_port}"
""")
        self.gateway = subprocess.Popen([GATEWAY, "--config", config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for(lambda: self.storescu_echo(), 20, "the listener")

    def storescu_echo(self):
        return subprocess.run(["echoscu", "-aet", "PACS", "-aec", "UNETRPP", "127.0.0.1", str(self.port)],
                              capture_output=True).returncode == 0

    def store(self, calling_ae):
        return subprocess.run(["storescu", "-aet", calling_ae, "-aec", "UNETRPP", "127.0.0.1", str(self.port),
                               CT_SMALL], capture_output=True, text=True)

    def metrics(self):
        def fetch():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                    return r.read().decode()
            except OSError:  # the exporter of a gateway just started
                return None
        return wait_for(fetch, 10, "metrics")

    def in_flight(self):
        active = os.path.join(self.spool, "active")
        return [d for d in os.listdir(active) if os.path.exists(os.path.join(active, d, "in_flight"))]

    def kill_in_flight(self):
        wait_for(self.in_flight, 20, "a series in flight")
        self.gateway.send_signal(signal.SIGKILL)
        self.gateway.wait()

    def test_a_series_that_kills_the_gateway_twice_is_quarantined(self):
        peers = 'allowed_peers { ae_title: "PACS" cidrs: "127.0.0.0/8" }'
        self.start(peers)
        self.assertEqual(self.store("PACS").returncode, 0)
        self.kill_in_flight()
        [name] = os.listdir(os.path.join(self.spool, "active"))
        with open(os.path.join(self.spool, "active", name, "state")) as f:
            self.assertEqual(f.read().split()[0], "1", "the attempt is counted before the work")

        self.start(peers)  # first death counted; processed again
        self.kill_in_flight()
        self.start(peers)  # second death: quarantined at start
        quarantined = os.path.join(self.spool, "quarantine", name)
        wait_for(lambda: os.path.isdir(quarantined), 10, "the quarantine")
        time.sleep(2)  # several processor passes
        self.assertEqual(os.listdir(os.path.join(self.spool, "active")), [])
        self.assertFalse(os.path.exists(os.path.join(quarantined, "in_flight")))
        with open(os.path.join(quarantined, "reason")) as f:
            self.assertIn("stopped 2 times while processing", f.read())
        self.assertIn('upp_gateway_series_total{outcome="quarantined",rule=""} 1', self.metrics())

    def test_only_listed_peers_may_associate(self):
        # PACS may call from loopback; MODALITY only from a network that is
        # not this one (its address is what refuses it).
        self.start('allowed_peers { ae_title: "PACS" cidrs: "127.0.0.1/32" } '
                   'allowed_peers { ae_title: "MODALITY" cidrs: "10.99.0.0/16" }')
        stranger = self.store("STRANGER")
        self.assertNotEqual(stranger.returncode, 0)
        self.assertIn("Association Rejected", stranger.stderr + stranger.stdout)
        elsewhere = self.store("MODALITY")
        self.assertNotEqual(elsewhere.returncode, 0)
        self.assertIn("Association Rejected", elsewhere.stderr + elsewhere.stdout)
        self.assertEqual(files_under(os.path.join(self.spool, "series")), [])
        text = self.metrics()
        self.assertIn('upp_gateway_associations_rejected_total{reason="calling_ae"} 1', text)
        self.assertIn('upp_gateway_associations_rejected_total{reason="peer_address"} 1', text)
        self.assertEqual(self.store("PACS").returncode, 0)
        self.assertEqual(len(files_under(os.path.join(self.spool, "series"))) +
                         len(files_under(os.path.join(self.spool, "active"))), 1)


if __name__ == "__main__":
    unittest.main()
