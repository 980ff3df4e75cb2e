"""Worker faults in one fit: a worker SIGKILLed while writing a checkpoint (a half-written checkpoint) and
another SIGKILLed mid-epoch. Each time the worker group restarts from the last complete checkpoint, and
the fit finishes with the scores of a fault-free run."""

import os

import pytest

from sweeps.config import load_config
from sweeps.fit import run_fit

pytestmark = pytest.mark.integration


def test_killed_worker_resumes_from_checkpoint(tmp_path, tiny_bert_dir, keyword_csv):
    import ray

    from cluster.local import connect

    marker, marker_ckpt = tmp_path / "killed", tmp_path / "killed-in-checkpoint"
    raw = {
        "name": "restart", "task": "classification",
        "model": {"path": str(tiny_bert_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(keyword_csv)},
        "train": {"learning_rate": 3e-3, "batch_size": 8, "epochs": 3, "warmup_ratio": 0.0},
        "deepspeed": {"zero_stage": 2},
        "scaling": {"num_workers": 2, "max_failures": 3},
        "storage": {"path": str(tmp_path / "clean")},
    }
    # Workers inherit the environment of the Ray instance, so set the fault before it starts.
    os.environ["ZEROTUNE_FAULT_KILL_IN_CHECKPOINT"] = f"0:1:{marker_ckpt}"  # epoch 1's engine state written, its state.json not
    os.environ["ZEROTUNE_FAULT_KILL_AT"] = f"0:2:3:{marker}"  # mid epoch 2
    try:
        connect(num_cpus=3)
        faulty = run_fit(load_config(raw={**raw, "storage": {"path": str(tmp_path / "faulty")}}), export=False)
    finally:
        del os.environ["ZEROTUNE_FAULT_KILL_AT"], os.environ["ZEROTUNE_FAULT_KILL_IN_CHECKPOINT"]
        ray.shutdown()
    assert marker.exists() and marker_ckpt.exists(), "a fault was not injected"
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
    # Two injected failures, two restarts. The first restart could not use the half-written epoch-1
    # checkpoint (that would start at epoch 2): it resumed after epoch 0 (or from scratch, if the kill
    # beat Ray Train's registration of epoch 0's checkpoint). The second resumed after epoch 1 (or 0).
    assert [s["start_epoch"] for s in starts][:1] == [0] and len(starts) == 3, starts
    assert starts[1]["start_epoch"] in (0, 1) and starts[2]["start_epoch"] in (1, 2), starts
    # Retries (the restarts above) == injected failures. `resumes` counts the restarts in the lineage of
    # the checkpoint the fit finished from: 2, or 1 when the last restart went back to the first attempt's.
    assert json.loads((records / "fold-0.json").read_text())["resumes"] in (1, 2)
    assert faulty["metrics"]["eval_loss"] == pytest.approx(clean["metrics"]["eval_loss"], abs=1e-3)
    assert faulty["metrics"]["accuracy"] == pytest.approx(clean["metrics"]["accuracy"], abs=0.02)
