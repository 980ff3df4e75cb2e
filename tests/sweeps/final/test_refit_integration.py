"""`zerotune refit` run again on the shared tiny sweep (which ended with its own refit): a second, fresh fit in a
run directory of its own, which `refit/latest.json` then names, with weights, card and metrics of that one fit."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_refit_again_trains_afresh_in_its_own_run_and_latest_names_it(tiny_sweep, ray_head, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from sweeps.layout import SweepDir
    from trainer.records import FitRecords

    _, _, shared, _ = tiny_sweep
    # A copy (without checkpoints), so that the tests reading the shared sweep's refit see the one it made.
    root = tmp_path / shared.name
    shutil.copytree(shared, root, ignore=shutil.ignore_patterns("checkpoint_*"))
    sweep = SweepDir(str(root))
    first = sweep.latest_refit()
    first_metrics = Path(first.metrics).read_text()
    started = time.time()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_head["token"], "HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "refit", str(root), "--address", ray_head["gcs"], "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)

    second = sweep.latest_refit()
    runs = sorted(p.name for p in Path(sweep.refit).iterdir() if p.is_dir())
    assert len(runs) == 2 and second.uri != first.uri and Path(second.uri).name in runs
    assert Path(first.metrics).read_text() == first_metrics  # the earlier refit is left whole
    # It trained: its own start marker, in a fresh worker group, with its own epochs.
    (start,) = FitRecords(second.records).starts()
    (first_start,) = FitRecords(first.records).starts()
    assert start.time > started and start.pid != first_start.pid and start.start_epoch == 0
    metrics = json.loads(Path(second.metrics).read_text())
    assert printed["model_dir"] == metrics["model_dir"] == second.model and printed["wall_s"] == metrics["wall_s"]
    assert len(metrics["history"]) == 4
    # Card, metrics and weights are the same fit's.
    card = (Path(second.model) / "README.md").read_text()
    tested = next(line for line in card.splitlines() if line.startswith("- test metrics:"))
    for key in ("f1_macro", "accuracy", "eval_loss"):
        assert f"{key}={metrics['metrics'][key]:.4g}" in tested, (key, tested)
    probe = json.loads((Path(second.model) / "engine_predictions.json").read_text())
    assert len(probe["rows"]) == metrics["probe_rows"] > 0
    model = AutoModelForSequenceClassification.from_pretrained(second.model).eval()
    with torch.no_grad():
        for row, expected in zip(probe["rows"][:16], probe["values"], strict=False):
            logits = model(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long))
            np.testing.assert_allclose(logits.logits[0].numpy(), expected, atol=1e-4)
