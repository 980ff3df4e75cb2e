"""From the sweep's records to tracked runs: the mapping every backend writes, and the TensorBoard files it makes
(read back with TensorBoard's own reader)."""

from __future__ import annotations

import logging
import math
import time

import pytest

from sweeps.config import load_config
from sweeps.layout import Params, SweepDir
from sweeps.tracking.runs import fold_run, fold_score, sweep_run, trial_run
from trainer.records import FoldRecord

SWEEP = "/results/s"


def _fold(fold: int, *, losses=(1.2, 0.9), f1=(0.4, 0.6), best: int = 1, diverged=None) -> FoldRecord:
    history = [
        {"epoch": e, "eval_loss": loss, "f1_macro": score, "time": 1.5, "samples_per_s": None}
        for e, (loss, score) in enumerate(zip(losses, f1, strict=True))
    ]
    return FoldRecord(
        fold=fold,
        epochs_run=len(history),
        best_epoch=best,
        metrics={"f1_macro": f1[best], "eval_loss": losses[best], "per_class": {"a": 1.0}},
        history=history,
        val_sha="x",
        n_train=80,
        n_val=20,
        diverged=diverged,
    )


def _row(state: str, **over) -> dict:
    row = {
        "trial_id": "a1",
        "state": state,
        "reason": None,
        "params": {"learning_rate": 0.003, "train": {"schedule": "cosine"}},
        "folds_done": 2,
        "fold_scores": [0.6, 0.7],
        "mean": 0.65,
        "std": 0.05,
        "duration_s": 12.0,
    }
    return {**row, **over}


def test_a_fold_run_has_each_epoch_at_its_step_and_the_scored_values_at_the_best_epoch():
    run = fold_run(_fold(1, losses=(1.2, 0.9, float("nan")), f1=(0.4, 0.6, 0.5)), trial_id="a1", sweep=SWEEP)
    assert run.metric("eval_loss") == [(0, 1.2), (1, 0.9)]  # the non-finite loss of epoch 2 is left out
    assert run.metric("f1_macro") == [(0, 0.4), (1, 0.6), (2, 0.5)]
    assert run.metric("scored_f1_macro") == [(1, 0.6)] and run.metric("samples_per_s") == []
    assert not any(key.startswith("scored_per_class") for key, _, _ in run.metrics)  # only numbers are charted
    assert run.tags["zerotune.fold"] == "1" and run.tags["zerotune.trial_id"] == "a1" and run.status == "FINISHED"
    assert run.params["n_val"] == "20" and "trainable_params" not in run.params  # unknown counts are not made up
    assert fold_score(_fold(1), metric="f1_macro") == [("f1_macro", 0.6, 1)]
    assert fold_score(_fold(1, f1=(0.4, math.nan)), metric="f1_macro") == []


def test_a_diverged_fold_fails_and_says_where():
    where = {"fold": 0, "epoch": 0, "step": 3, "loss": "nan"}
    run = fold_run(_fold(0, diverged=where), trial_id="a1", sweep=SWEEP)
    assert run.status == "FAILED" and run.tags["zerotune.reason"] == "diverged at epoch 0 step 3 (loss nan)"


@pytest.mark.parametrize(
    ("state", "status"),
    [("completed", "FINISHED"), ("pruned", "FINISHED"), ("failed", "FAILED"), ("interrupted", "KILLED")]
    + [("unfinished", "RUNNING"), ("pending", "RUNNING")],
)
def test_a_trial_run_takes_its_state_params_and_mean(state, status):
    run = trial_run(_row(state, reason="why"), metric="f1_macro", sweep=SWEEP)
    assert run.status == status and run.tags["zerotune.state"] == state and run.tags["zerotune.reason"] == "why"
    assert run.params == {"learning_rate": "0.003", "train.schedule": "cosine"}
    assert run.metric("f1_macro_mean") == [(0, 0.65)] and run.metric("f1_macro_std") == [(0, 0.05)]


def test_a_trial_with_no_fold_has_no_mean_to_chart():
    run = trial_run(
        _row("failed", fold_scores=[], mean=math.nan, std=math.nan, folds_done=0), metric="f1_macro", sweep=SWEEP
    )
    assert run.metric("f1_macro_mean") == [] and run.metric("folds_done") == [(0, 0.0)]


def test_the_sweep_run_has_the_best_trial_the_baseline_and_the_refits_test_score():
    cfg = load_config(raw={"name": "s", "data": {"path": "/tmp/d.csv"}})
    started = sweep_run(cfg, sweep=SWEEP)
    assert started.status == "RUNNING" and started.params["metric"] == "f1_macro" and not started.metrics
    summary = {
        "states": {"completed": 2, "failed": 1},
        "best": {"trial_id": "b2", "mean": 0.8, "std": 0.02, "params": {}},
        "baseline": {"name": "majority class", "f1_macro": 0.2},
        "refit": {"metrics": {"f1_macro": 0.75, "eval_loss": 0.5}},
        "interrupted": False,
    }
    ended = sweep_run(cfg, sweep=SWEEP, summary=summary)
    assert ended.status == "FINISHED" and ended.tags["best_trial"] == "b2"
    got = {key: value for key, value, _ in ended.metrics}
    assert got["best_f1_macro_mean"] == 0.8 and got["baseline_f1_macro"] == 0.2 and got["test_f1_macro"] == 0.75
    assert got["trials_failed"] == 1
    assert sweep_run(cfg, sweep=SWEEP, summary={**summary, "interrupted": True}).status == "KILLED"
    assert (
        started.tags["zerotune.sweep_id"]
        == ended.tags["zerotune.sweep_id"]
        != sweep_run(cfg, sweep="/b").tags["zerotune.sweep_id"]
    )


def _sweep(tmp_path, **tracking):
    cfg = load_config(
        raw={"name": "s", "data": {"path": "/tmp/d.csv"}, "storage": {"path": str(tmp_path)}, "tracking": tracking}
    )
    sweep = SweepDir.of(cfg)
    trial = sweep.trial("a1")
    trial.write_params(Params(params={"learning_rate": 0.003}, started=time.time()))
    trial.records.write_fold(_fold(0))
    return cfg, sweep


def test_tensorboard_runs_per_trial_and_fold_read_back_once_each(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sweeps.tracking.callback import SweepTracking

    cfg, sweep = _sweep(tmp_path, tensorboard=True)
    tracking = SweepTracking(cfg, sweep.uri)
    tracking.sync_trial("a1")  # live: the fold so far
    sweep.trial("a1").records.write_fold(_fold(1, f1=(0.5, 0.7)))
    tracking.sync_trial("a1")
    ended = _row("completed", fold_scores=[0.6, 0.7], params={"learning_rate": 0.003})
    tracking.sync_trial("a1", row=ended)
    SweepTracking(cfg, sweep.uri).sync_trial("a1", row=ended)  # a resumed run: nothing is written twice
    fold = EventAccumulator(sweep.tensorboard_run("a1", 1))
    fold.Reload()
    assert [(e.step, round(e.value, 6)) for e in fold.Scalars("f1_macro")] == [(0, 0.5), (1, 0.7)]
    trial = EventAccumulator(sweep.tensorboard_run("a1"))
    trial.Reload()
    assert [(e.step, round(e.value, 6)) for e in trial.Scalars("f1_macro")] == [(0, 0.6), (1, 0.7)]
    assert [round(e.value, 6) for e in trial.Scalars("f1_macro_mean")] == [0.65]


def test_a_failing_backend_is_turned_off_with_one_warning_and_the_sweep_goes_on(tmp_path, caplog):
    cfg, sweep = _sweep(tmp_path, tensorboard=True)
    (tmp_path / "s" / "tensorboard").write_text("a file where the run directories would go")
    from sweeps.tracking.callback import SweepTracking

    tracking = SweepTracking(cfg, sweep.uri)
    with caplog.at_level(logging.WARNING, logger="sweeps.tracking.callback"):
        tracking.sync_trial("a1")
        tracking.sync_trial("a1")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("tracking: tensorboard failed"), warnings
    assert tracking.backends() == {}
