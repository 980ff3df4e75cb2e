"""A private local Ray head with token authentication, as a cluster would run it.

`ray start --head --block` with its own ports, --temp-dir and HOME (no ~/.ray/auth_token is read or
written). It is stopped by signalling that one process and then only processes of its session / temp
dir: never a global `ray stop`, which would kill every Ray process on the machine (other runs included).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _our_pids(session: int, temp_dir: str) -> list[int]:
    """Processes of the head's session, or whose command line names its private temp dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        sid = int(stat.rsplit(")", 1)[1].split()[4])  # field 6: session id
        if sid == session or temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop(proc: subprocess.Popen, temp_dir: str) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops what it started
        try:
            # It waits on each Ray process in turn (~20 s); the head is private, so what is left is killed below.
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + 6
    while (left := _our_pids(proc.pid, temp_dir)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 4 else signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@contextmanager
def token_head(*, num_cpus: int, worker_env: dict[str, str] | None = None):
    """Yields address (dashboard), gcs, token and temp dir. `worker_env` reaches every worker of the head."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray, "the `ray` CLI (ray[default]) must be installed"
    # Short path: Ray's unix sockets live under --temp-dir and have a ~107-byte limit.
    temp = Path(tempfile.mkdtemp(prefix="ztj", dir="/tmp"))
    (temp / "home").mkdir()
    token = secrets.token_hex(24)
    dashboard, gcs = _free_port(), _free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "HOME": str(temp / "home"),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Jobs run `python` from PATH: the interpreter that has zerotune installed, as a cluster image would.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # Ray Train's placement-group cleaner finds "its" cluster by auto-detection, which fails while another Ray
        # runs on this machine (a controller killed with its trial then leaks its workers' CPUs): name this head.
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
        **(worker_env or {}),
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        ray,
        "start",
        "--head",
        "--block",
        f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        "--dashboard-host=127.0.0.1",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--temp-dir={temp / 'ray'}",
    ]
    log = open(temp / "head.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError as exc:  # 401: up, and enforcing auth
                if exc.code == 401:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (temp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray head did not come up in 60 s"
            time.sleep(0.5)
        yield {"address": address, "gcs": f"127.0.0.1:{gcs}", "token": token, "temp": temp}
    finally:
        _stop(proc, str(temp))
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
