"""A real MLflow tracking server (`mlflow server`, SQLite backend, artifacts proxied) on localhost, and a real
`optuna-dashboard`: each its own process group, started and stopped by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A server process on 127.0.0.1:port; `ready()` waits until `health` answers 200."""

    proc: subprocess.Popen
    port: int
    log: Path
    health: str = "/health"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, timeout_s: float = 120) -> Server:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.uri + self.health, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"{self.uri} did not answer in {timeout_s} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and the workers it started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _start(args: list[str], *, log: Path, env: dict | None = None, port: int, health: str) -> Server:
    out = log.open("wb")
    proc = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
    )
    out.close()
    return Server(proc=proc, port=port, log=log, health=health)


def start_mlflow_server(directory: Path) -> Server:
    """`mlflow server` on a SQLite file under `directory`, artifacts stored there and served through it (so the
    sweep's driver uploads over HTTP, as to a remote server). Returns at once: call `ready()` before using it."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}"]
    args += ["--artifacts-destination", str(directory / "artifacts"), "--workers", "1"]
    # No job runner (a process MLflow starts for its GenAI jobs): nothing here uses it.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return _start(args, log=directory / "mlflow.log", env=env, port=port, health="/health")


def start_optuna_dashboard(storage_url: str, log: Path) -> Server:
    port = free_port()
    args = [str(Path(sys.executable).parent / "optuna-dashboard"), storage_url, "--host", "127.0.0.1"]
    args += ["--port", str(port)]
    return _start(args, log=log, port=port, health="/api/meta")
