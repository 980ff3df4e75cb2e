"""A training worker SIGKILLed mid-fold: the worker group restarts from the last checkpoint and finishes."""

import os

import pytest

from sweeps.config import load_config
from sweeps.fit import run_fit

pytestmark = pytest.mark.integration


def test_killed_worker_resumes_from_checkpoint(tmp_path, tiny_bert_dir, keyword_csv):
    import ray

    from cluster.local import connect

    marker = tmp_path / "killed"
    raw = {
        "name": "restart", "task": "classification",
        "model": {"path": str(tiny_bert_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(keyword_csv)},
        "train": {"learning_rate": 3e-3, "batch_size": 8, "epochs": 3, "warmup_ratio": 0.0},
        "deepspeed": {"zero_stage": 2},
        "scaling": {"num_workers": 2, "max_failures": 2},
        "storage": {"path": str(tmp_path / "clean")},
    }
    # Workers inherit the environment of the Ray instance, so set the fault before it starts.
    os.environ["ZEROTUNE_FAULT_KILL_AT"] = f"0:2:3:{marker}"  # mid epoch 2: the epoch-1 checkpoint is registered
    try:
        connect(num_cpus=3)
        faulty = run_fit(load_config(raw={**raw, "storage": {"path": str(tmp_path / "faulty")}}), export=False)
    finally:
        del os.environ["ZEROTUNE_FAULT_KILL_AT"]
        ray.shutdown()
    assert marker.exists(), "the fault was not injected"
    connect(num_cpus=3)
    try:
        clean = run_fit(load_config(raw=raw), export=False)
    finally:
        ray.shutdown()
    record = faulty["history"]
    assert [h["epoch"] for h in record] == [0, 1, 2]  # epochs 0-1 came from the checkpoint, 2 was redone
    import json
    from pathlib import Path

    records = Path(faulty["metrics_path"]).with_name("records")
    starts = [json.loads(p.read_text()) for p in sorted(records.glob("starts/fold-0-*.json"))]
    # One injected failure, one restart, resumed from a checkpoint (the latest one Ray Train had
    # registered when the worker died: epoch 1's, or epoch 0's if the kill beat its registration).
    assert len(starts) == 2 and starts[0]["start_epoch"] == 0 and starts[1]["start_epoch"] in (1, 2)
    assert json.loads((records / "fold-0.json").read_text())["resumes"] == 1
    assert faulty["metrics"]["eval_loss"] == pytest.approx(clean["metrics"]["eval_loss"], abs=1e-3)
    assert faulty["metrics"]["accuracy"] == pytest.approx(clean["metrics"]["accuracy"], abs=0.02)
