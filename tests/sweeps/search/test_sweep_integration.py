"""A real sweep: Tune + Optuna over tiny-BERT trials, each fitting 3 folds in one worker group; ASHA prunes on folds."""

import hashlib
import json

import numpy as np
import pytest

from tiny_models import KILLS, OOM_BATCH

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sweep(tiny_sweep):
    _, summary, root, _ = tiny_sweep
    return summary, root


def _fold_records(root, trial_id: str) -> list[dict]:
    paths = (root / "trials" / trial_id / "records").glob("fold-*.json")
    return sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["fold"])


def _killed_trial(summary, root) -> dict:
    """The trial whose worker was killed twice (tiny_models.sweep_faults): the one whose folds were resumed."""
    killed = [t for t in summary["trials"] if any(r["resumes"] for r in _fold_records(root, t["trial_id"]))]
    assert len(killed) == 1, [(t["trial_id"], t["params"]) for t in killed]
    return killed[0]


def test_every_trial_is_scored_on_the_same_folds(sweep):
    summary, root = sweep
    folds = json.loads((root / "folds.json").read_text())
    expected = [hashlib.sha1(np.asarray(f["val"], dtype=np.int64).tobytes()).hexdigest() for f in folds["folds"]]
    assert len(summary["trials"]) == 4
    for trial in summary["trials"]:
        records = sorted((root / "trials" / trial["trial_id"] / "records").glob("fold-*.json"))
        assert len(records) == trial["folds_done"] >= (0 if trial["state"] == "failed" else 1)
        for rec in map(lambda p: json.loads(p.read_text()), records):
            assert rec["val_sha"] == expected[rec["fold"]]


def test_one_worker_group_per_trial_and_one_tokenisation_per_sweep(sweep):
    summary, root = sweep
    killed = _killed_trial(summary, root)["trial_id"]  # restarted on purpose: its own test below
    for trial in (t for t in summary["trials"] if t["trial_id"] != killed):
        starts = [
            json.loads(p.read_text())
            for p in (root / "trials" / trial["trial_id"] / "records" / "starts").glob("fold-*.json")
        ]
        if trial["state"] == "completed":
            assert len(starts) == trial["folds_done"]  # no fold re-run
        else:  # a stop can land while the next fold is being set up; a failed fold may go unrecorded
            assert len(starts) <= trial["folds_done"] + 1
        # Every fold of a trial ran in the same worker processes (a trial whose fold died unrecorded has none).
        assert len({s["pid"] for s in starts}) == min(1, len(starts))
        assert all(s["setup_s"] > 0 for s in starts)
    assert summary["tokenize_s"] > 0  # the driver tokenised once; trials and folds index into that


def test_pruning_and_running_mean(sweep):
    summary, root = sweep
    states = summary["states"]
    assert states["pruned"] >= 1, summary["trials"]
    assert states["completed"] >= 1
    for trial in summary["trials"]:
        if trial["state"] == "pruned":
            assert trial["folds_done"] < 3
        if trial["state"] == "completed":
            assert len(trial["fold_scores"]) == 3
            assert trial["mean"] == pytest.approx(np.mean(trial["fold_scores"]))
    # Tune saw the running mean over finished folds as the objective at each fold's end.
    results = [json.loads(line) for p in (root / "tune").glob("*/result.json") for line in p.read_text().splitlines()]
    for r in results:
        done = [r[f"fold{i}_f1_macro"] for i in range(r["folds_done"])]
        if done:
            assert r["objective"] == pytest.approx(np.mean(done))
    best = summary["best"]
    assert best["mean"] == max(t["mean"] for t in summary["trials"] if t["state"] == "completed")
    assert best["mean"] > summary["baseline"]["f1_macro"] + 0.2  # the keyword task is learnable
    assert best["deepspeed"]["zero_optimization"]["stage"] == 1


def test_the_optuna_study_holds_pruned_trials_as_pruned_with_their_fold_scores(sweep, tiny_sweep):
    """The searcher's saved study (what TPE learns from): fold scores as intermediate values at step = fold, a
    scheduler-stopped trial PRUNED (not COMPLETE with a partial mean), a failed one FAIL."""
    from optuna.trial import TrialState
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    from sweeps.search.searcher import make_searcher

    summary, root = sweep
    searcher = make_searcher(tiny_sweep[0])
    SearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=1)).restore_from_dir(str(root / "tune"))
    expected = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
    for trial in summary["trials"]:
        study_trial = searcher._ot_study.trials[searcher._ot_trials[trial["trial_id"]].number]
        assert study_trial.state == expected[trial["state"]], trial
        if trial["state"] != "failed":
            assert study_trial.intermediate_values == dict(enumerate(trial["fold_scores"]))
        if trial["state"] == "completed":
            assert study_trial.value == pytest.approx(trial["mean"])


def test_out_of_memory_fails_its_trial_once_and_the_sweep_goes_on(sweep):
    from sweeps.report.facts import report_facts

    summary, root = sweep
    oom = [t for t in summary["trials"] if t["params"]["batch_size"] == OOM_BATCH]
    assert (
        len(oom) == 1
        and oom[0]["state"] == "failed"
        and oom[0]["reason"].startswith("out-of-memory at fold 0 epoch 0 step 0")
    ), oom
    assert len(summary["trials"]) == 4  # the sweep went on after the failure
    diverged = [t["reason"] for t in summary["trials"] if t["state"] == "failed" and t not in oom]
    assert len(diverged) == 1 and diverged[0].startswith("diverged at fold 0 epoch 0 step "), diverged
    for t in oom:
        records = root / "trials" / t["trial_id"] / "records"
        assert "can't allocate memory" in json.loads(sorted(records.glob("oom-rank*.json"))[0].read_text())["error"]
        # At most one fold start (rank 0 may be torn down before it records it when the other rank fails
        # first); the restart read the OOM record and stopped without starting a fold: not retried.
        assert len(list(records.glob("starts/fold-0-*.json"))) <= 1
    # The report, from storage alone, says why.
    rows = {t["trial_id"]: t for t in report_facts(str(root))["trials"]}
    assert all(rows[t["trial_id"]]["reason"].startswith("out-of-memory") for t in oom)


def test_status_reads_storage_only(sweep):
    import subprocess
    import sys

    summary, root = sweep
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep", "status", str(root), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["best"]["trial_id"] == summary["best"]["trial_id"]
    table = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep", "status", str(root)], capture_output=True, text=True, timeout=60
    ).stdout
    assert "pruned" in table and f"best trial {summary['best']['trial_id']}" in table


def test_a_worker_killed_at_a_fold_boundary_and_again_in_the_same_trial_resumes_each_time(sweep, ray_head):
    """Rank 0 of the first trial is SIGKILLed at the first step of fold 1, then, in the restarted worker group, at
    the first step of fold 2 (tiny_models.sweep_faults). Ray Train restarts the group twice (max_failures 2); the
    first restart resumes after fold 0, the second after fold 1, from the checkpoint the restarted group took as it
    ended (or, when the kill beat Ray Train to registering that report, from the one before it and the fold's
    record). The trial completes with every fold scored once and no finished fold run again."""
    from trainer.records import FitRecords

    summary, root = sweep
    markers = ray_head["sweep_fault_markers"]
    assert all((markers / name).exists() for name in KILLS), "the kills were not injected"
    trial = _killed_trial(summary, root)
    assert trial["state"] == "completed" and trial["params"]["batch_size"] == 4, trial
    folds = _fold_records(root, trial["trial_id"])
    # One record per fold; each fold a kill hit says it was restarted once.
    assert [(r["fold"], r["resumes"]) for r in folds] == [(0, 0), (1, 1), (2, 1)]
    starts = FitRecords(str(root / "trials" / trial["trial_id"] / "records")).starts()
    # Each kill re-ran only the fold it hit, from its start; the folds before it were never started again.
    assert [(m.fold, m.start_epoch) for m in starts] == [(0, 0), (1, 0), (1, 0), (2, 0), (2, 0)]
    pids = [m.pid for m in starts]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] and len(set(pids)) == 3  # three groups in turn
    assert sorted(int((markers / name).read_text()) for name in KILLS) == sorted([pids[1], pids[3]])
    # Tune saw no epoch twice, in order (a kill may beat Ray Train to the report just before it: that one is
    # lost, and the fold's record stands for it), and each fold's score as its record has it.
    (result_file,) = (root / "tune").glob(f"*{trial['trial_id']}*/result.json")
    results = [json.loads(line) for line in result_file.read_text().splitlines()]
    seen = [(r["fold"], r["epoch"]) for r in results]
    assert seen == sorted(set(seen)) and len(seen) >= 3 * folds[0]["epochs_run"] - 2, seen
    scores = [r["metrics"]["f1_macro"] for r in folds]
    assert [results[-1][f"fold{i}_f1_macro"] for i in range(3)] == scores == trial["fold_scores"]
