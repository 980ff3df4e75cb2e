"""The storage path turns read-only mid-sweep: the sweep stops at once with a clear error, what it wrote
stays readable, and once the storage is writable again the same command finishes the sweep."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from test_resume_integration import _cmd, _finished_trials
from test_sweep_integration import sweep_raw

pytestmark = pytest.mark.integration


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mountpoint(tmp_path):
    """A bind mount we may later remount read-only (needs root / CAP_SYS_ADMIN, as on the CI machine)."""
    src, mnt = tmp_path / "disk", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    if not _mount("--bind", str(src), str(mnt)):
        pytest.skip("cannot bind-mount here (needs root): the read-only storage fault is not exercised")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_storage_turning_read_only_stops_the_sweep_and_loses_nothing(tmp_path, mountpoint, tiny_bert_dir, keyword_csv):
    raw = sweep_raw(tiny_bert_dir, keyword_csv, mountpoint, name="ro", seed=7)
    raw["search"] = {**raw["search"], "num_trials": 2, "initial_points": raw["search"]["initial_points"][:2], "scheduler": {"type": "none"}}
    raw["train"] = {**raw["train"], "epochs": 1, "max_steps_per_epoch": 3}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    root = mountpoint / "ro"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    proc = subprocess.Popen(_cmd(config), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 400
    while not _finished_trials(root) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
    assert _finished_trials(root) and proc.poll() is None, "no trial finished before the deadline"
    time.sleep(2)
    assert _mount("-o", "remount,ro,bind", str(mountpoint))
    broke = time.monotonic()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    stopped_in = time.monotonic() - broke

    assert proc.returncode == 3, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(("error:", "  fix:"))]
    assert lines[0].startswith(f"error: storage.path: the sweep directory {root} became unwritable"), err[-3000:]
    assert "run the same command again" in lines[1]
    assert stopped_in < 90, stopped_in

    # What was written is readable while the storage is still read-only.
    before = _finished_trials(root)
    status = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "status", str(root), "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    trials = {t["trial_id"]: t for t in json.loads(status.stdout)["trials"]}
    assert all(trials[t]["state"] == "completed" for t in before)

    # Writable again: the same command finishes the sweep without re-running the finished trial.
    assert _mount("-o", "remount,rw,bind", str(mountpoint))
    done = subprocess.run(_cmd(config), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["states"]["completed"] == 2
    after = _finished_trials(root)
    assert all(after[t] == mtime for t, mtime in before.items())
