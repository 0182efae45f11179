"""Starts unetrpp-serve as a subprocess on a free port for Python tests."""
import os
import signal
import socket
import subprocess
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(args) as server:` -> server.address; stops with SIGTERM."""

    def __init__(self, extra_args=(), config_text=None, client_kwargs=None, port=None):
        self.port = port or free_port()  # a given port: a server restarted where its clients expect it
        self.address = f"127.0.0.1:{self.port}"
        self.args = [os.environ["UPP_SERVE"], "--listen", self.address, "--metrics", "off", *extra_args]
        self.config_text = config_text
        self.client_kwargs = client_kwargs or {}  # how the health check connects (TLS, token)
        self.log = tempfile.TemporaryFile()
        self.exit_code = None

    def start(self) -> "ServerProcess":
        """Starts the process without waiting for it to serve."""
        if self.config_text is not None:
            self.config = tempfile.NamedTemporaryFile("w", suffix=".textproto", delete=False)
            self.config.write(self.config_text)
            self.config.close()
            self.args += ["--config", self.config.name]
        self.process = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def __enter__(self):
        self.start()
        from unetrpp_client import Client, ServerError
        deadline = time.time() + 120
        # A short wait per check: an exited server is noticed between checks.
        with Client(self.address, **dict({"connect_timeout": 1}, **self.client_kwargs)) as client:
            while time.time() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError("the server exited: " + self.output())
                try:
                    if client.healthy():
                        return self
                except ServerError:
                    pass
                time.sleep(0.2)
        raise RuntimeError("the server did not become healthy: " + self.output())

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc):
        if getattr(self, "process", None) is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.exit_code = self.process.wait()
        return False
