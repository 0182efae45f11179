"""deploy/monitoring/ against the real expositions.

Starts unetrpp-serve (its default model) and unetrpp-dicom-gateway with
their metrics on loopback, scrapes /metrics once each, and checks:
- `promtool check metrics` reports nothing on either exposition;
- `promtool check rules` accepts deploy/monitoring/alerts.yml, and
  `promtool test rules` passes alerts_test.yml, which has for every alert a
  case where it fires and one where it stays silent;
- every metric the dashboard and the rules name is in the expositions (or
  is one that only a GPU host exports, named in the server's source), so
  neither can rot when a metric is renamed;
- every alert has a summary, a runbook and a runbook_url whose anchor is a
  section of docs/monitoring.md.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
MONITORING = os.path.join(ROOT, "deploy", "monitoring")
DASHBOARD = os.path.join(MONITORING, "unetrpp-dashboard.json")
RULES = os.path.join(MONITORING, "alerts.yml")
RULES_TEST = os.path.join(HERE, "alerts_test.yml")
RUNBOOK = os.path.join(ROOT, "docs", "monitoring.md")
PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool")

# Exported only where NVML reads a GPU (server/device_memory.cc), or once a
# job has been created on a device: absent from a CPU host's idle scrape.
GPU_OR_JOB_ONLY = {
    "upp_device_memory_used_bytes": "server/device_memory.cc",
    "upp_device_memory_total_bytes": "server/device_memory.cc",
    "upp_device_admitted_memory_bytes": "server/metrics.cc",
    "upp_jobs_total": "server/metrics.cc",
}
# Prometheus' own series that the rules may read.
PROMETHEUS_SERIES = {"up"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, process, until, timeout=60):
    """/metrics of `process` once it has the sample line `until`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before serving metrics")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            if until in text.splitlines():
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no metrics with {until!r} on port {port}")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def metric_names(exposition):
    """The families of an exposition, with their samples' names."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def names_in(expr):
    """Metric names in a PromQL expression: identifiers that are not
    functions, keywords, label names or label values."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, strings
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    found = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(\(?)", expr):
        if m.group(2):
            continue  # a function or aggregation
        if m.group(1) in ("and", "or", "unless", "offset", "bool", "inf", "nan"):
            continue
        found.add(m.group(1))
    return found


@unittest.skipUnless(PROMTOOL, "needs promtool (Debian's prometheus; deploy/install-deps.sh installs it)")
class MonitoringTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="upp-monitoring-")
        cls.expositions = {}
        server_metrics = free_port()
        server = subprocess.Popen(
            [os.environ["UPP_SERVE"], "--listen", f"127.0.0.1:{free_port()}", "--metrics",
             f"127.0.0.1:{server_metrics}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cls.dir)
        try:
            cls.expositions["server"] = scrape(server_metrics, server, "upp_serving 1")
        finally:
            stop(server)
        gateway_metrics = free_port()
        config = os.path.join(cls.dir, "gateway.textproto")
        with open(config, "w") as f:
            f.write(f"""
listener {{ ae_title: "UNETRPP" port: {free_port()} }}
spool_dir: "{os.path.join(cls.dir, 'spool')}"
service {{ target: "127.0.0.1:1" }}
destination {{ host: "127.0.0.1" port: 1 ae_title: "PACS" }}
rules {{ name: "ct" modalities: "CT" }}
metrics_address: "127.0.0.1:{gateway_metrics}"
""")
        gateway = subprocess.Popen([os.environ["UPP_GATEWAY"], "--config", config], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            cls.expositions["gateway"] = scrape(gateway_metrics, gateway, "upp_gateway_queued_series 0")
        finally:
            stop(gateway)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def promtool(self, *args, stdin=None):
        return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, cwd=HERE)

    def test_expositions_pass_promtool_check_metrics(self):
        for name, text in self.expositions.items():
            with self.subTest(name):
                r = self.promtool("check", "metrics", stdin=text)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertEqual((r.stdout + r.stderr).strip(), "", "promtool has remarks")

    def test_rules_are_valid(self):
        r = self.promtool("check", "rules", RULES)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_each_alert_fires_and_stays_silent_as_its_tests_say(self):
        r = self.promtool("test", "rules", RULES_TEST)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def rules(self):
        with open(RULES) as f:
            return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]

    def test_every_alert_has_a_firing_and_a_silent_case(self):
        with open(RULES_TEST) as f:
            cases = [c for t in yaml.safe_load(f)["tests"] for c in t.get("alert_rule_test", [])]
        for rule in self.rules():
            with self.subTest(rule["alert"]):
                own = [c for c in cases if c["alertname"] == rule["alert"]]
                self.assertTrue(any(c.get("exp_alerts") for c in own), "no case where it fires")
                self.assertTrue(any(not c.get("exp_alerts") for c in own), "no case where it stays silent")

    def test_every_alert_has_a_runbook_section(self):
        with open(RUNBOOK) as f:
            anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                       for line in f if line.startswith("#")}
        for rule in self.rules():
            with self.subTest(rule["alert"]):
                a = rule.get("annotations", {})
                for key in ("summary", "description", "runbook", "runbook_url"):
                    self.assertTrue(a.get(key), f"annotation {key} missing")
                self.assertTrue(a["runbook_url"].startswith("docs/monitoring.md#"), a["runbook_url"])
                self.assertIn(a["runbook_url"].split("#", 1)[1], anchors)
                self.assertIn(rule.get("labels", {}).get("severity"), ("warning", "critical"))

    def referenced(self):
        """{metric name: where} for the dashboard's and the rules' queries."""
        refs = {}
        with open(DASHBOARD) as f:
            dashboard = json.load(f)
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                for name in names_in(target["expr"]):
                    refs.setdefault(name, f"dashboard panel {panel['title']!r}")
        for var in dashboard["templating"]["list"]:
            m = re.match(r"label_values\((\w+)", var.get("definition", ""))
            if m:
                refs.setdefault(m.group(1), f"dashboard variable {var['name']}")
        for rule in self.rules():
            for name in names_in(rule["expr"]):
                refs.setdefault(name, f"alert {rule['alert']}")
        return refs

    def test_every_metric_named_exists(self):
        exported = set().union(*(metric_names(t) for t in self.expositions.values()))
        refs = self.referenced()
        self.assertGreater(len(refs), 20, sorted(refs))  # the parser found the queries' names
        for name, where in sorted(refs.items()):
            with self.subTest(name):
                if name in PROMETHEUS_SERIES:
                    continue
                if name in GPU_OR_JOB_ONLY:
                    with open(os.path.join(ROOT, GPU_OR_JOB_ONLY[name])) as f:
                        self.assertIn(f'"{name}"', f.read(), f"{where}: {name} is not in the source")
                    continue
                self.assertIn(name, exported, f"{where} names {name}, which neither exposition has")

    def test_the_dashboard_covers_what_an_operator_asks(self):
        refs = self.referenced()
        for name in ("upp_requests_total", "upp_stage_duration_seconds_bucket", "upp_windows_processed_total",
                     "upp_batch_size_windows_sum", "upp_queued_windows", "upp_admitted_memory_bytes",
                     "upp_admission_refusals_total", "upp_gateway_series_total"):
            self.assertIn(name, refs)


if __name__ == "__main__":
    unittest.main()
