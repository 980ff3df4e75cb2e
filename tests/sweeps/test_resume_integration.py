"""The sweep driver SIGKILLed mid-sweep, then the same command again: every trial finishes, none is re-run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_sweep_integration import sweep_raw

pytestmark = pytest.mark.integration


def _cmd(config):
    return [sys.executable, "-m", "sweeps", "sweep", "run", str(config), "--format", "json"]


def _finished_trials(root: Path, k: int = 3) -> dict[str, float]:
    """Trials whose last fold record exists, with that record's mtime."""
    out = {}
    for rec in root.glob(f"trials/*/records/fold-{k - 1}.json"):
        out[rec.parts[-3]] = rec.stat().st_mtime
    return out


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path, tiny_bert_dir, keyword_csv):
    raw = sweep_raw(tiny_bert_dir, keyword_csv, tmp_path / "results", name="resume", seed=5)
    raw["search"] = {**raw["search"], "num_trials": 2, "initial_points": raw["search"]["initial_points"][:2], "scheduler": {"type": "none"}}
    raw["train"] = {**raw["train"], "epochs": 1, "max_steps_per_epoch": 3}  # the driver's restart is tested, not learning
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    root = tmp_path / "results" / "resume"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    proc = subprocess.Popen(_cmd(config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while not _finished_trials(root) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(2)
    before = _finished_trials(root)
    assert before and proc.poll() is None, "no trial finished before the deadline"
    time.sleep(3)  # let Tune persist the experiment state that records the finished trial
    before = _finished_trials(root)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the embedded Ray it started
    proc.wait()
    assert len(before) < 2

    done = subprocess.run(_cmd(config), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["states"]["completed"] == 2
    after = _finished_trials(root)
    assert len(after) == 2
    for trial_id, mtime in before.items():
        assert after[trial_id] == mtime, f"trial {trial_id} was re-run"
        starts = list((root / "trials" / trial_id / "records" / "starts").glob("fold-*.json"))
        assert len(starts) == 3  # each fold fitted exactly once
    assert summary["fold_fits"] == 6
    # Both trials are fixed initial points, so an uninterrupted run picks the same best configuration:
    # the trial that finished before the kill, with its scores untouched.
    assert summary["best"]["params"] == {"learning_rate": 3e-3, "batch_size": 4}
    assert summary["best"]["trial_id"] in before
