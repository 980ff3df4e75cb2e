"""A sweep through two faults, each followed by the same command again:

1. the driver SIGKILLed after a trial finished (its cluster lives on, as a `ray job` driver's does; the
   session's token-auth head, so no Ray start per run);
2. the storage turned read-only mid-sweep (a read-only bind mount; needs root, as on the CI machine):
   the sweep stops at once with a clear error, and what it wrote stays readable.

In the end every trial finished, none was re-run (a trial that finished before a stop reports its records
again without starting workers), and the best trial is the one an uninterrupted run picks.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tiny_models import sweep_raw

pytestmark = pytest.mark.integration
K = 2


def _cmd(config, gcs):
    return [sys.executable, "-m", "sweeps", "sweep", "run", str(config), "--address", gcs, "--format", "json"]


def _finished_trials(root: Path) -> dict[str, float]:
    """Trials whose last fold record exists, with that record's mtime."""
    return {rec.parts[-3]: rec.stat().st_mtime for rec in root.glob(f"trials/*/records/fold-{K - 1}.json")}


def _mount(*args) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _wait_for(root: Path, proc, n: int, timeout: float = 400) -> dict:
    deadline = time.monotonic() + timeout
    while len(_finished_trials(root)) < n and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
    if proc.poll() is not None:
        raise AssertionError(
            f"the sweep exited ({proc.returncode}) before trial {n} finished: "
            f"{(proc.stderr.read() if proc.stderr else '')[-3000:]}"
        )
    assert len(_finished_trials(root)) >= n, f"trial {n} did not finish in time"
    return _finished_trials(root)


def test_driver_kill_and_read_only_storage_lose_nothing(tmp_path, tiny_bert_dir, keyword_csv, ray_head):
    disk, mnt = tmp_path / "disk", tmp_path / "mnt"
    disk.mkdir()
    mnt.mkdir()
    can_mount = _mount("--bind", str(disk), str(mnt))
    raw = sweep_raw(tiny_bert_dir, keyword_csv, mnt, name="resume", seed=5)
    # Only the first point can learn (the others barely move the weights), so the best is known in advance.
    points = [
        {"learning_rate": 3e-3, "batch_size": 4},
        {"learning_rate": 1e-6, "batch_size": 8},
        {"learning_rate": 1e-6, "batch_size": 4},
    ]
    # One trial at a time, so "the trial that finished first" is the first point.
    raw["search"] = {
        **raw["search"],
        "num_trials": 3,
        "initial_points": points,
        "scheduler": {"type": "none"},
        "max_concurrent_trials": 1,
    }
    raw["train"] = {**raw["train"], "epochs": 2}  # 48 steps of 4 rows per fold: enough for the first point to learn
    raw["scaling"] = {
        "num_workers": 1
    }  # data parallelism is tested elsewhere; each worker group start costs ~7 s per worker
    raw["deepspeed"] = {
        "zero_stage": 0
    }  # one worker, ZeRO-0: the path that skips DeepSpeed's one-rank all-reduce (it must still learn)
    raw["folds"], raw["final"] = {"k": K}, {"refit": False}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    root = mnt / "resume"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": ray_head["token"],
        "HOME": str(tmp_path),
    }
    env.pop("RAY_ADDRESS", None)
    cmd = _cmd(config, ray_head["gcs"])
    try:
        # 1. Kill the driver once a trial has finished.
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for(root, proc, 1)
        first = _finished_trials(root)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert len(first) == 1

        # 2. The same command resumes; once another trial has finished, the storage turns read-only.
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        if can_mount:
            second = _wait_for(root, proc, 2)
            time.sleep(2)
            assert _mount("-o", "remount,ro,bind", str(mnt))
            broke = time.monotonic()
            try:
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            assert proc.returncode == 3, err[-3000:]
            lines = [line for line in err.splitlines() if line.startswith(("error:", "  fix:"))]
            assert lines[0].startswith(f"error: storage.path: the sweep directory {root} became unwritable"), err[
                -3000:
            ]
            assert "run the same command again" in lines[1]
            assert time.monotonic() - broke < 90
            # What was written is readable while the storage is still read-only.
            status = subprocess.run(
                [sys.executable, "-m", "sweeps", "sweep", "status", str(root), "--format", "json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert status.returncode == 0, status.stderr
            states = {t["trial_id"]: t["state"] for t in json.loads(status.stdout)["trials"]}
            assert all(states[t] == "completed" for t in second)
            # 3. Writable again: the same command finishes the sweep.
            assert _mount("-o", "remount,rw,bind", str(mnt))
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        else:
            second = first
            out, err = proc.communicate(timeout=600)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            print("cannot bind-mount here (needs root): the read-only storage fault was not exercised")
    finally:
        if can_mount:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)

    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["states"]["completed"] == 3 and len(summary["trials"]) == 3, summary["states"]
    after = _finished_trials(disk / "resume")
    assert len(after) == 3
    for trial_id, mtime in second.items():
        assert after[trial_id] == mtime, f"trial {trial_id} was re-run"
        starts = list((disk / "resume" / "trials" / trial_id / "records" / "starts").glob("fold-*.json"))
        assert len(starts) == K  # each fold fitted exactly once
        # Tune had not saved these trials as finished (killed, or unwritable storage), so it resumed them: they
        # reported from their records, with no worker group (which would have left a final re-report checkpoint).
        assert not list((disk / "resume" / "trials" / trial_id / "fit").glob("checkpoint_*_final")), trial_id
    assert summary["fold_fits"] == 3 * K
    # All trials are fixed initial points, so an uninterrupted run picks the same best configuration:
    # the trial that finished before the kill, with its scores untouched.
    assert summary["best"]["params"] == points[0]
    assert summary["best"]["trial_id"] in first
    assert summary["best"]["mean"] > max(
        t["mean"] for t in summary["trials"] if t["trial_id"] != summary["best"]["trial_id"]
    )  # no tie
