"""A real sweep: Tune + Optuna over tiny-BERT trials, each fitting 3 folds in one worker group; ASHA prunes on folds."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sweeps.config import load_config
from sweeps.run import run_sweep

pytestmark = pytest.mark.integration
OOM_BATCH = 16


def sweep_raw(model_dir, data, storage, **over):
    raw = {
        "name": "it-sweep", "seed": 3, "task": "classification",
        "model": {"path": str(model_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(data)},
        "train": {"batch_size": 8, "epochs": 2, "warmup_ratio": 0.0},
        "deepspeed": {"zero_stage": 1},
        "scaling": {"num_workers": 2},
        "folds": {"k": 3},
        "search": {
            "num_trials": 4,
            "space": {"learning_rate": {"low": 1e-6, "high": 1e-2, "log": True}, "batch_size": [4, 8, OOM_BATCH]},
            # A learning rate that learns the keyword task, then one far too small to: the second
            # trial's first fold is below the first's, so ASHA (keep the better half) must prune it.
            # The third trains batches the (simulated) memory limit cannot hold.
            "initial_points": [{"learning_rate": 3e-3, "batch_size": 4}, {"learning_rate": 1e-6, "batch_size": 8}, {"learning_rate": 3e-3, "batch_size": OOM_BATCH}],
            "scheduler": {"type": "asha", "grace_folds": 1, "reduction_factor": 2},
        },
        "storage": {"path": str(storage)},
    }
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_bert_dir, keyword_csv):
    import ray

    from cluster.local import connect

    storage = tmp_path_factory.mktemp("sweep-results")
    cfg = load_config(raw=sweep_raw(tiny_bert_dir, keyword_csv, storage))
    # Workers inherit the environment of the Ray instance: batches of OOM_BATCH rows exhaust an address-space cap.
    os.environ["ZEROTUNE_FAULT_OOM_BATCH"] = str(OOM_BATCH)
    try:
        connect(num_cpus=3)
        summary = run_sweep(cfg, progress=False)
    finally:
        del os.environ["ZEROTUNE_FAULT_OOM_BATCH"]
        ray.shutdown()
    return summary, Path(summary["storage"])


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


def test_out_of_memory_fails_its_trial_once_and_the_sweep_goes_on(sweep):
    from sweeps.report import report_facts

    summary, root = sweep
    oom = [t for t in summary["trials"] if t["params"]["batch_size"] == OOM_BATCH]
    assert oom and all(t["state"] == "failed" and t["reason"].startswith("out-of-memory at fold 0 epoch 0 step 0") for t in oom), oom
    assert all(t["state"] != "failed" for t in summary["trials"] if t not in oom)
    assert len(summary["trials"]) == 4  # the sweep went on after the failure
    for t in oom:
        records = root / "trials" / t["trial_id"] / "records"
        assert "can't allocate memory" in json.loads(sorted(records.glob("oom-rank*.json"))[0].read_text())["error"]
        # One start, one restart that read the OOM record and stopped: not retried until max_failures.
        assert len(list(records.glob("starts/fold-0-*.json"))) == 1
    # The report, from storage alone, says why.
    rows = {t["trial_id"]: t for t in report_facts(str(root))["trials"]}
    assert all(rows[t["trial_id"]]["reason"].startswith("out-of-memory") for t in oom)


def test_status_reads_storage_only(sweep):
    import subprocess
    import sys

    summary, root = sweep
    proc = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "status", str(root), "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["best"]["trial_id"] == summary["best"]["trial_id"]
    table = subprocess.run([sys.executable, "-m", "sweeps", "sweep", "status", str(root)], capture_output=True, text=True, timeout=60).stdout
    assert "pruned" in table and f"best trial {summary['best']['trial_id']}" in table
