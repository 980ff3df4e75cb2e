"""Ctrl+C mid-trial of a sweep that ends with a refit, then the same command three ways (issue 16):

(a) a second `sweep run` of the same sweep while the first runs is refused in seconds, naming the holder;
(b) SIGINT to the runner (what Ctrl+C sends) stops it with exit 130: its running trial is `interrupted`, not
    pruned, and no refit starts;
(c) the same command with a changed search range is refused (exit 2, naming the field) and changes nothing;
(d) the same command with more trials resumes: the interrupted trial goes on from its last checkpoint (its
    finished fold is not fitted again), the new trial count is reached (the restored Tuner alone would keep the
    saved one), and the refit runs.

One worker, ZeRO 0, two folds, on the session's token-auth head (no Ray start per run).
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

from sweeps.cli import main
from sweeps.layout import SweepDir
from sweeps.results.status import sweep_status
from tiny_models import sweep_raw

pytestmark = pytest.mark.integration
K = 2


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the sweep, with its size and mtime: what "nothing changed" compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _wait(what, proc, timeout: float):
    deadline = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) early: {proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_ctrl_c_mid_trial_then_a_refused_drift_then_a_resume_with_more_trials(
    tmp_path, tiny_bert_dir, keyword_csv, ray_head, capsys
):
    raw = sweep_raw(tiny_bert_dir, keyword_csv, tmp_path / "results", name="interrupt", seed=7)
    # Two fixed points, one trial at first: raising num_trials on resume runs the second point. The first trial
    # cannot learn at its rate and fits many short epochs (~0.1 s each), so a fold lasts seconds: the interrupt
    # lands inside its fold 1. The second learns in two epochs: it is the best, and the refit is short.
    raw["search"] = {
        "num_trials": 1,
        "space": {
            "learning_rate": {"low": 1e-6, "high": 1e-2, "log": True},
            "epochs": {"low": 1, "high": 50},
            "batch_size": [4, 8],
        },
        "initial_points": [
            {"learning_rate": 1e-6, "epochs": 40, "batch_size": 8},
            {"learning_rate": 3e-3, "epochs": 2, "batch_size": 4},
        ],
        "scheduler": {"type": "none"},
    }
    raw["scaling"], raw["deepspeed"] = {"num_workers": 1}, {"zero_stage": 0}
    raw["folds"] = {"k": K, "test_fraction": 0.2}  # with final.refit: true (sweep_raw)
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    root = tmp_path / "results" / "interrupt"
    sweep = SweepDir(str(root))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": ray_head["token"],
        "HOME": str(tmp_path),
    }
    env.pop("RAY_ADDRESS", None)

    def cmd(*overrides):
        run = [sys.executable, "-m", "sweeps", "sweep", "run", str(config), *overrides]
        return [*run, "--address", ray_head["gcs"], "--format", "json"]

    first = subprocess.Popen(cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # (a) While the first run holds the sweep, a second one is refused in seconds, naming who holds it.
        _wait(lambda: sweep.lease_claims(), first, timeout=120)
        t0 = time.monotonic()
        second = subprocess.run(cmd(), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and f"pid {first.pid}" in second.stderr, second.stderr[-3000:]
        # The refusal itself takes seconds; the rest is starting Python and pre-flight beside the first run's fits
        # on 2 cores (32 s once under load): far below the 300 s lease timeout a waiting second run would show.
        assert time.monotonic() - t0 < 45
        # (b) Ctrl+C inside fold 1, a second after it started: Ray Train has registered fold 0's checkpoint by then
        # (a fold's record is written just before its checkpoint is reported).
        _wait(lambda: list(root.glob("trials/*/records/starts/fold-1-*.json")), first, timeout=240)
        time.sleep(1)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err[-3000:]
    assert json.loads(out)["interrupted"] is True and "run the same command" in err
    [trial_dir] = [p.parents[1] for p in root.glob("trials/*/records/fold-0.json")]
    trial_id = trial_dir.name
    fold0 = trial_dir / "records" / "fold-0.json"
    fold0_mtime = fold0.stat().st_mtime_ns
    assert not (trial_dir / "records" / f"fold-{K - 1}.json").exists()  # interrupted inside fold 1
    shown = sweep_status(str(root), storage=str(tmp_path))  # what `zerotune sweep status` prints (no cluster)
    assert [(t["trial_id"], t["state"]) for t in shown["trials"]] == [(trial_id, "interrupted")]
    assert shown["interrupted"] is True and shown["best"] is None
    assert not Path(sweep.refit).exists()  # an interrupted sweep does not refit

    # (c) Another search range: refused before anything runs, and the sweep directory is left as it was.
    before = _files(root)
    saved_config = Path(sweep.config).read_text()
    # The CLI's own entry point in this process: the refusal comes before Ray or any data is touched.
    assert main(cmd("search.space.learning_rate.high=0.02")[3:]) == 2
    refused = capsys.readouterr().err
    assert "error: search.space.learning_rate.high: changed since the sweep started: 0.01 -> 0.02" in refused
    assert _files(root) == before and Path(sweep.config).read_text() == saved_config

    # (d) More trials: allowed, applied, and the interrupted trial resumes where it stopped.
    done = subprocess.run(cmd("search.num_trials=2"), env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        summary = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(done.stdout[-2000:]) from None
    assert summary["applied_changes"] == [{"field": "search.num_trials", "saved": 1, "new": 2}]
    assert "resumes with changes: search.num_trials 1 -> 2" in done.stderr
    assert json.loads(Path(sweep.config).read_text()) == {
        **json.loads(saved_config),
        "search": {**json.loads(saved_config)["search"], "num_trials": 2},
    }
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    assert len(states) == 2 and set(states.values()) == {"completed"} and states[trial_id] == "completed"
    assert summary["interrupted"] is False and summary["fold_fits"] == 2 * K
    assert fold0.stat().st_mtime_ns == fold0_mtime  # the finished fold was kept, not fitted again
    assert len(list((trial_dir / "records" / "starts").glob("fold-0-*.json"))) == 1
    # The refit ran once the sweep finished, scored on the held-out test rows.
    assert summary["refit"]["n_test"] > 0 and summary["refit"]["metrics"] and sweep.latest_refit() is not None
