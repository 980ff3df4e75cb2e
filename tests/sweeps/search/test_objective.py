"""What Tune sees of a trial (sweeps.search.objective): the running fold mean on top of the worker's epoch keys."""

import pytest

from sweeps.search.objective import completed_report, tune_metrics
from trainer.records import FoldRecord
from trainer.spec import EpochReport


def _fold(i, score):
    return FoldRecord(
        fold=i,
        epochs_run=3,
        best_epoch=2,
        metrics={"f1_macro": score, "accuracy": 0.9, "per_class": {}},
        history=[],
        val_sha="x",
        trainable_params=10,
        total_params=12,
    )


def _report(folds, current):
    return EpochReport(
        fold=len(folds),
        epoch=0,
        k=3,
        metric="f1_macro",
        metrics={"f1_macro": current},
        folds=tuple(folds),
        timings={"train_s": 1.0},
        trainable_params=10,
        total_params=12,
    )


def test_before_the_first_fold_ends_the_objective_is_the_current_epochs_score():
    out = tune_metrics(_report([], 0.4))
    assert out["objective"] == 0.4 and out["objective_std"] == 0.0 and (out["folds_done"], out["folds_total"]) == (0, 3)
    assert out["epoch_f1_macro"] == 0.4 and out["time_train_s"] == 1.0 and not any(k.startswith("fold0") for k in out)


def test_after_some_folds_the_objective_is_their_mean():
    out = tune_metrics(_report([_fold(0, 0.5), _fold(1, 0.7)], 0.1))
    assert out["objective"] == pytest.approx(0.6) and out["objective_std"] == pytest.approx(0.1)
    assert out["folds_done"] == 2 and out["fold0_f1_macro"] == 0.5 and out["fold1_f1_macro"] == 0.7


def test_a_completed_trial_reports_its_fold_mean_again_from_its_records():
    report = completed_report([_fold(0, 0.5), _fold(1, 0.7)], metric="f1_macro", k=2)
    assert report["objective"] == pytest.approx(0.6) and report["objective_std"] == pytest.approx(0.1)
    assert (report["folds_done"], report["folds_total"], report["fold"], report["epoch"]) == (2, 2, 1, 2)
    assert report["fold0_f1_macro"] == 0.5 and report["epoch_f1_macro"] == 0.7 and "epoch_per_class" not in report
    assert report["trainable_params"] == 10 and report["time_train_s"] == 0.0
