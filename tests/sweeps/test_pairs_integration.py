"""Sentence pairs (data.text_pair_column) through a sweep, its refit and `zerotune predict`, for real: one trial of
k=2 folds and the refit on the session's token-auth Ray head (one worker, ZeRO 0), then predict on a pairs CSV.

The label is set by a word in the PAIR column only (the text column is filler), so a model that scores above
chance on the test split read the pair; and predict must reproduce the refit engine's own outputs on those rows,
which it does only if it tokenizes text + pair as training did (segment ids included).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeps.cli import main

pytestmark = pytest.mark.integration
NAME = "pairs-sweep"


def _pairs(n: int = 120) -> pd.DataFrame:
    from tiny_models import keyword_rows

    rows = keyword_rows(n=n, seed=1)
    filler = keyword_rows(n=n, seed=2)["text"].str.replace(r"wonderful|terrible|ordinary", "the", regex=True)
    return pd.DataFrame({"id": rows["id"], "text": filler, "pair": rows["text"], "label": rows["label"]})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_bert_dir, ray_head):
    """The sweep run as users run it (`zerotune sweep run`); returns (its directory, the pairs table)."""
    work = tmp_path_factory.mktemp("pairs")
    table = _pairs()
    table.to_csv(work / "pairs.csv", index=False)
    raw = {
        "name": NAME,
        "seed": 0,
        "task": "classification",
        "model": {"path": str(tiny_bert_dir), "max_length": 32, "dropout": 0.0},
        "data": {"path": str(work / "pairs.csv"), "text_pair_column": "pair"},
        "train": {"batch_size": 4, "epochs": 8, "warmup_ratio": 0.0},  # an epoch is ~0.1 s: worker starts dominate
        "deepspeed": {"zero_stage": 0},
        "scaling": {"num_workers": 1, "max_failures": 0},
        "folds": {"k": 2, "test_fraction": 0.25},
        "search": {
            "num_trials": 1,
            "space": {"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
            "initial_points": [{"learning_rate": 3e-3}],
            "scheduler": {"type": "none"},
        },
        "storage": {"path": str(work / "results"), "checkpoint_every_epoch": False},
        "final": {"refit": True},
    }
    (work / "sweep.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_head["token"], "HOME": str(work)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep", "run", "sweep.yaml", "--address", ray_head["gcs"]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "results" / NAME, table


def test_a_pairs_sweep_refits_on_the_pairs_and_predict_scores_them_as_the_engine_did(sweep, tmp_path, capsys):
    from sweeps.layout import SweepDir

    root, table = sweep
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best"] is not None and len(summary["trials"]) == 1
    run = SweepDir(str(root)).latest_refit()
    refit = json.loads(open(run.metrics).read())
    assert refit["metrics"]["accuracy"] > 0.8  # chance is 1/3, and only the pair tells the class
    meta = json.loads(open(os.path.join(run.model, "zerotune.json")).read())
    assert meta["paired"] is True

    probe = json.loads(open(os.path.join(run.model, "engine_predictions.json")).read())
    rows = table.iloc[probe["row_ids"]]  # nothing dropped: the example rows are the table's
    src = tmp_path / "new_pairs.csv"
    rows.drop(columns="label").to_csv(src, index=False)
    out = tmp_path / "pred.csv"
    args = ["predict", str(root), "--input", str(src), "--text-pair-column", "pair"]
    assert main([*args, "--output", str(out)]) == 0
    pred = pd.read_csv(out)
    assert list(pred["id"]) == list(rows["id"])
    logits = np.asarray(probe["values"])
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    labels = meta["labels"]
    np.testing.assert_allclose(pred[[f"p_{n}" for n in labels]].to_numpy(), expected, atol=1e-4)

    capsys.readouterr()
    assert main(["predict", str(root), "--input", str(src)]) == 2  # single texts into a pairs model
    assert "--text-pair-column" in capsys.readouterr().err
