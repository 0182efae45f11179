"""Every shell block of the README, run as a new user would run it.

The blocks are read out of README.md at test time, so the README cannot
drift from what works: each runs in a fresh folder that looks like the
repository root (the source folders and the build linked in), with what a
user brings along made first: `ct.nii.gz` (a phantom CT), and for the
checkpoint section `model_final_checkpoint.model` and `plans.pkl` saved the
way the official UNETR++ trainer saves them (random weights;
tests/tools/official_checkpoint.py).

Each command must end with status 0, or with the status its comment names
("# exit 7: ..."). A server started in the foreground (the gateway's last
line) is started in the background instead and must come up: unetrpp-serve
answer health on the default port, the gateway still run after a few
seconds; servers are stopped when the block ends. Left out: the demo and the test suite
(`run-demo.sh`, `run-tests.sh`), which are CI's own job.
"""
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("UPP_BUILD", os.path.join(ROOT, "build"))
SKIP = ("deploy/run-demo.sh", "deploy/run-tests.sh")
# Commands that serve until stopped.
SERVERS = ("unetrpp-serve", "unetrpp-dicom-gateway")
# A foreground server must still run after this many seconds (the gateway),
# or answer health within SERVE_SECONDS (unetrpp-serve on the default port).
FOREGROUND_SERVER_SECONDS = 8
SERVE_SECONDS = 120
# Debian's python3 is the one the README means (this machine may put
# another first on PATH).
PATH = "/usr/bin:/bin:" + os.environ.get("PATH", "")

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))


def readme_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if not any(s in b for s in SKIP)]


def commands(block):
    """The block's commands: continuation lines joined, a heredoc kept with
    the command that opens it. Yields (command text, expected status)."""
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        expected = 0
        m = re.search(r"#\s*exit (\d+)", line)
        if m:
            expected = int(m.group(1))
        heredoc = re.search(r"<<-?\s*'?\"?(\w+)", line)
        if heredoc:
            end = heredoc.group(1)
            body = []
            while i < len(lines) and lines[i].strip() != end:
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line] + body + [end])
        yield line, expected


def script_for(block):
    out = ['__check() { if [ "$1" != "$2" ]; then echo "README: exit $1 (expected $2): $3" >&2; exit 1; fi; }',
           # $1: the server's pid; $2: 1 to wait for health on the default port.
           f'__up() {{ for _ in $(seq 1 {SERVE_SECONDS}); do kill -0 "$1" 2>/dev/null || return 1; '
           'if [ "$2" = 1 ]; then build/clients/upp-client --wait 0 health >/dev/null 2>&1 && return 0; fi; '
           f'sleep 1; [ "$2" = 1 ] || [ $SECONDS -lt $((__t + {FOREGROUND_SERVER_SECONDS})) ] || return 0; done; return 1; }}']
    for command, expected in commands(block):
        shown = shlex.quote(command.splitlines()[0])
        first = command.split("#")[0].strip()
        if first.endswith("&"):
            out.append(command)
            out.append("__servers=\"$__servers $!\"")
        elif any(s in first.split()[0] for s in SERVERS) and "--check" not in first:
            health = int("unetrpp-serve" in first.split()[0] and "--config" not in first and "--listen" not in first)
            out.append(f"__t=$SECONDS; {first} &")
            out.append("__servers=\"$__servers $!\"")
            out.append(f"__up $! {health}")
            out.append(f"__check $? 0 {shown}")
        else:
            out.append(command)
            out.append(f"__check $? {expected} {shown}")
    return "__servers=''\ntrap 'kill $__servers 2>/dev/null; wait' EXIT\n" + "\n".join(out) + "\n"


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class ReadmeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fixtures = tempfile.mkdtemp(prefix="upp-readme-")
        cls.ct = os.path.join(cls.fixtures, "ct.nii.gz")
        subprocess.run([os.path.join(BUILD, "tools", "upp-phantom"), "--seed", "3", "--spacing", "2", "2", "4",
                        "--fov", "260", "220", "120", "-o", cls.ct], check=True, capture_output=True)
        import official_checkpoint  # tests/tools: the official trainer's file formats
        official_checkpoint.save_checkpoint(os.path.join(cls.fixtures, "model_final_checkpoint.model"))
        official_checkpoint.save_plans(os.path.join(cls.fixtures, "plans.pkl"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.fixtures, ignore_errors=True)

    def run_block(self, block):
        for port in (50051, 9464, 11112, 9465):
            self.assertTrue(port_free(port), f"port {port} is taken: the README's commands use it")
        work = tempfile.mkdtemp(prefix="upp-readme-run-")
        try:
            for name in os.listdir(ROOT):
                if not name.startswith(".") and name != "build":
                    os.symlink(os.path.join(ROOT, name), os.path.join(work, name))
            os.symlink(BUILD, os.path.join(work, "build"))
            for name in os.listdir(self.fixtures):
                shutil.copy(os.path.join(self.fixtures, name), work)
            env = dict(os.environ, PATH=PATH)
            env.pop("PYTHONPATH", None)
            env.pop("UPP_TOKEN", None)
            proc = subprocess.run(["bash", "-c", script_for(block)], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=900)
            self.assertEqual(proc.returncode, 0, f"block:\n{block}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
            return work, proc
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def test_the_readme_has_blocks_to_run(self):
        blocks = readme_blocks()
        self.assertGreaterEqual(len(blocks), 4)
        self.assertTrue(any("convert_checkpoint.py" in b for b in blocks))
        self.assertTrue(any("example.py" in b for b in blocks))

    def test_the_runner_fails_a_failing_command(self):
        # The runner itself: a wrong status fails, a named one passes.
        with self.assertRaises(AssertionError):
            self.run_block("false\n")
        with self.assertRaises(AssertionError):
            self.run_block("true   # exit 3: documented but not what happens\n")
        work, _ = self.run_block("bash -c 'exit 3'   # exit 3: documented\n")
        shutil.rmtree(work)


def _add_block_tests():
    for n, block in enumerate(readme_blocks()):
        first = next((c for c, _ in commands(block)), "").split("\n")[0]
        slug = re.sub(r"[^a-z0-9]+", "_", first.lower())[:50].strip("_")

        def test(self, block=block):
            work, _ = self.run_block(block)
            shutil.rmtree(work, ignore_errors=True)

        test.__doc__ = f"README block {n + 1}: {first}"
        setattr(ReadmeTest, f"test_block_{n + 1:02d}_{slug}", test)


_add_block_tests()

if __name__ == "__main__":
    unittest.main()
