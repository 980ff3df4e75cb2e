"""sweeps/results/collect.py: a trial's state and reason come from its records (one classifier),
the best from the registry."""

from types import SimpleNamespace

import pytest

from sweeps.config import load_config
from sweeps.layout import Params, SweepDir
from sweeps.results.collect import collect, trial_record
from trainer.records import FoldRecord, OomRecord


def _cfg(tmp_path, metric=None):
    search = {"num_trials": 4, "space": {"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}}}
    if metric:
        search["metric"] = metric
    return load_config(
        raw={
            "name": "s",
            "data": {"path": "x.csv"},
            "folds": {"k": 3},
            "search": search,
            "storage": {"path": str(tmp_path)},
        }
    )


def _fold(fold, score, diverged=None):
    return FoldRecord(
        fold=fold,
        epochs_run=1,
        best_epoch=0,
        metrics={"f1_macro": score, "eval_loss": score},
        history=[{"time": 2.0}],
        val_sha="x",
        trainable_params=10,
        total_params=10,
        diverged=diverged,
    )


def _trial(sweep, tid, scores, **kw):
    trial = sweep.trial(tid)
    trial.write_params(Params(params={"learning_rate": 1e-3}, started=1.0))
    for i, s in enumerate(scores):
        trial.records.write_fold(_fold(i, s, kw.get("diverged") if i == len(scores) - 1 else None))
    if "oom" in kw:
        trial.records.write_oom(kw["oom"])
    return trial


def _record(sweep, tid, result=None):
    return trial_record(sweep, tid, metric="f1_macro", k=3, result=result, use_gpu=False, workers=2)


def test_states_and_reasons_come_from_the_records(tmp_path):
    sweep = SweepDir.of(_cfg(tmp_path))
    _trial(sweep, "done", [0.5, 0.6, 0.7])
    _trial(
        sweep, "oom", [], oom=OomRecord(fold=0, epoch=1, step=4, rank=1, error="RuntimeError: can't allocate memory")
    )
    _trial(sweep, "nan", [0.4], diverged={"fold": 0, "epoch": 0, "step": 3, "loss": "nan"})
    _trial(sweep, "pruned", [0.1])
    _trial(sweep, "running", [0.2])
    # The error Tune holds for a failed trial says nothing the classifier reads: the records decide.
    told = SimpleNamespace(metrics={"folds_done": 0}, error=RuntimeError("trial failed"), path="")
    rows = {
        "done": _record(sweep, "done"),
        "oom": _record(sweep, "oom", told),
        "nan": _record(sweep, "nan", told),
        "pruned": _record(sweep, "pruned", SimpleNamespace(metrics={"folds_done": 1}, error=None, path="")),
        "running": _record(sweep, "running"),
        "crash": _record(
            sweep, "crash", SimpleNamespace(metrics={}, error=ValueError("bad tokenizer\nTraceback ..."), path="")
        ),
    }
    assert {k: (r["state"], r["reason"]) for k, r in rows.items()} == {
        "done": ("completed", None),
        "oom": ("failed", "out-of-memory at fold 0 epoch 1 step 4"),
        "nan": ("failed", "diverged at fold 0 epoch 0 step 3 (loss nan)"),
        "pruned": ("pruned", "stopped after 1 of 3 folds"),
        "running": ("unfinished", None),
        "crash": ("failed", "error: bad tokenizer"),
    }
    assert (
        rows["done"]["mean"] == pytest.approx(0.6)
        and rows["done"]["duration_s"] == 6.0
        and rows["done"]["worker_seconds"] == 12.0
    )


@pytest.mark.parametrize(("metric", "best"), [("f1_macro", "high"), ("eval_loss", "low")])
def test_the_best_completed_trial_follows_the_metrics_direction(tmp_path, metric, best):
    cfg = _cfg(tmp_path, metric)
    sweep = SweepDir.of(cfg)
    _trial(sweep, "high", [0.8, 0.8, 0.8])
    _trial(sweep, "low", [0.2, 0.2, 0.2])
    _trial(sweep, "higher-but-pruned", [0.9])
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    summary = collect(sweep.uri, cfg=cfg)
    assert summary["best"]["trial_id"] == best and [f["fold"] for f in summary["best"]["folds"]] == [0, 1, 2]
    assert summary["states"]["completed"] == 2 and summary["fold_fits"] == 7
