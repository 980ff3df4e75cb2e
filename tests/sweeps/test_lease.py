"""sweeps/lease.py: one writer per sweep, on a local directory and on a real S3-protocol server (moto's).

The other runner is a real process (tests/sweeps/lease_runner.py): it takes the lease, holds it until its stdin
closes, then releases it; SIGSTOP freezes it (a hung driver: no heartbeat, process alive), SIGKILL kills it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sweeps.config import StorageConfig
from sweeps.layout import SweepDir
from sweeps.lease import HEARTBEAT_S, hold, take
from trainer.storage import read_json
from zerotune.errors import StorageError

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("lease_runner.py")
FAST = {"settle_s": 0.1}  # the settle wait is for claims written at the same moment; tests need little of it


@pytest.fixture(params=["local", "s3"])
def sweep_uri(request, tmp_path, monkeypatch):
    if request.param == "local":
        return str(tmp_path / "sweep")
    server = request.getfixturevalue("s3_server")  # tests/conftest.py
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return server.uri("sweep")


class Runner:
    """Another `sweep run` of the same sweep, in its own process."""

    def __init__(self, uri: str, *, timeout_s: float = 300, heartbeat_s: float = 0.2):
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER), uri, str(timeout_s), str(heartbeat_s)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line == "held", line + self.proc.stderr.read()[-2000:]

    def finish(self) -> str:
        """Close its stdin: it releases the lease and says whether it had lost it."""
        out, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, err[-2000:]
        return out.strip()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)


def claims(uri: str) -> list[dict]:
    return [read_json(p) for p in SweepDir(uri).lease_claims()]


def test_a_second_runner_is_refused_in_seconds_naming_the_holder(sweep_uri):
    holder = Runner(sweep_uri)
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError) as err:
            take(sweep_uri, timeout_s=300, **FAST)
        assert time.monotonic() - t0 < 5
        message = err.value.message
        assert f"pid {holder.proc.pid}" in message and "since " in message and "last heartbeat" in message
        assert f"host {os.uname().nodename}" in message
        assert "wait for that run to end" in err.value.fix and "storage.lease_timeout_s" in err.value.fix
        assert [c["pid"] for c in claims(sweep_uri)] == [holder.proc.pid]  # the refused runner left nothing
    finally:
        assert holder.finish() == "released"
    assert claims(sweep_uri) == []  # released on exit: the next run takes it
    with hold(sweep_uri, timeout_s=300, **FAST) as lease:
        assert [c["owner"] for c in claims(sweep_uri)] == [lease.claim.owner]


def test_runners_claiming_at_once_agree_on_one_holder(tmp_path):
    uri, go = str(tmp_path / "sweep"), threading.Barrier(3)
    won, refused = [], []

    def run():
        go.wait()
        try:
            won.append(take(uri, timeout_s=300, settle_s=0.5))
        except StorageError as exc:
            refused.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 2, refused
    assert [c["owner"] for c in claims(uri)] == [won[0].claim.owner]  # the losers deleted their claims
    won[0].release()


def test_a_stale_lease_is_taken_over_with_a_warning(sweep_uri, caplog):
    holder = Runner(sweep_uri, heartbeat_s=0.2)
    os.kill(holder.proc.pid, signal.SIGSTOP)  # hung: alive, no heartbeat
    try:
        with pytest.raises(StorageError):
            take(sweep_uri, timeout_s=1, **FAST)  # its last heartbeat is fresh
        time.sleep(1.05)
        with caplog.at_level(logging.WARNING, logger="sweeps.lease"):
            lease = take(sweep_uri, timeout_s=1, **FAST)
        warning = next(r.getMessage() for r in caplog.records if "taking over" in r.getMessage())
        assert f"pid {holder.proc.pid}" in warning and "no heartbeat for over 1 s" in warning
        assert [c["owner"] for c in claims(sweep_uri)] == [lease.claim.owner]
    finally:
        os.kill(holder.proc.pid, signal.SIGCONT)
    time.sleep(0.3)  # its next heartbeat (due while it was frozen) finds its claim gone
    assert holder.finish() == "lost"  # it knows, and its release leaves the new holder's claim alone
    assert [c["owner"] for c in claims(sweep_uri)] == [lease.claim.owner]
    lease.release()


def test_a_killed_driver_on_this_host_is_taken_over_at_once(sweep_uri, caplog):
    holder = Runner(sweep_uri)
    holder.kill()  # SIGKILL: no release, its claim stays with a fresh heartbeat
    assert [c["pid"] for c in claims(sweep_uri)] == [holder.proc.pid]
    with caplog.at_level(logging.WARNING, logger="sweeps.lease"), hold(sweep_uri, timeout_s=300, **FAST) as lease:
        assert [c["owner"] for c in claims(sweep_uri)] == [lease.claim.owner]
    warning = next(r.getMessage() for r in caplog.records if "taking over" in r.getMessage())
    assert f"pid {holder.proc.pid}" in warning and "its process is gone from this host" in warning


def test_the_heartbeat_advances(sweep_uri):
    with hold(sweep_uri, timeout_s=300, heartbeat_s=0.1, **FAST):
        first = claims(sweep_uri)[0]["heartbeat"]
        deadline = time.monotonic() + 5
        while claims(sweep_uri)[0]["heartbeat"] <= first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert claims(sweep_uri)[0]["heartbeat"] > first


def test_released_however_the_run_ends(sweep_uri):
    def run(ending):
        with hold(sweep_uri, timeout_s=300, **FAST) as lease:
            # A refit inside the sweep's run takes the lease too: the same writer, so it shares the outer one.
            with hold(sweep_uri, timeout_s=300, **FAST) as inner:
                assert inner.claim is None
            assert [c["owner"] for c in claims(sweep_uri)] == [lease.claim.owner]
            if ending is not None:
                raise ending()

    run(None)
    assert claims(sweep_uri) == []
    for ending in (RuntimeError, KeyboardInterrupt):  # an error, Ctrl+C
        with pytest.raises(ending):
            run(ending)
        assert claims(sweep_uri) == []


def test_the_lease_timeout_outlasts_two_heartbeats():
    assert StorageConfig().lease_timeout_s == 300
    minimum = next(m.ge for m in StorageConfig.model_fields["lease_timeout_s"].metadata if hasattr(m, "ge"))
    assert minimum >= 2 * HEARTBEAT_S
