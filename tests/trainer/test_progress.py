"""trainer/progress.py: with train.early_stopping_holdout, a held-out share of the fold's training rows picks the
epoch (and stops the fold), so the validation rows that score the fold never choose it."""

from types import SimpleNamespace

import numpy as np

from trainer.metrics import HOLDOUT
from trainer.progress import EpochResult, FoldProgress, TrainedEpoch, fit_rows


def _spec(patience=2, holdout=None, seed=0):
    train = SimpleNamespace(early_stopping_patience=patience, early_stopping_holdout=holdout)
    return SimpleNamespace(train=train, metric="f1_macro", mode="max", seed=seed)


def _progress(spec, *scores):
    """Epochs with (validation score, holdout score)."""
    progress = FoldProgress()
    for epoch, (val, held) in enumerate(scores):
        trained = TrainedEpoch(loss=1.0, step_times=(0.1,), tokens=10, padded_tokens=10)
        result = EpochResult(epoch, trained, {"f1_macro": val, HOLDOUT + "f1_macro": held}, seconds=1.0)
        progress = progress.add(result, result.history_entry(world=1, batch_size=8), spec)
    return progress


def test_the_holdout_picks_the_epoch_and_stops_the_fold_not_the_validation_rows():
    epochs = [(0.5, 0.9), (0.9, 0.6), (0.6, 0.5)]  # validation best at epoch 1, holdout best at epoch 0
    held = _progress(_spec(holdout=0.2), *epochs)
    assert held.best.epoch == 0 and held.best.metrics["f1_macro"] == 0.5  # scored on validation, picked on holdout
    assert held.stalled(_spec(holdout=0.2))  # two epochs without a better holdout score
    plain = _progress(_spec(), *epochs)
    assert plain.best.epoch == 1 and not plain.stalled(_spec())


def test_the_holdout_is_a_seeded_share_of_the_training_rows_and_only_under_early_stopping():
    rows = np.arange(100, 150)
    train, holdout = fit_rows(_spec(holdout=0.2), rows, fold=1)
    assert len(holdout) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, holdout]).tolist()) == rows.tolist()
    again = fit_rows(_spec(holdout=0.2), rows, fold=1)
    assert np.array_equal(again[1], holdout) and not np.array_equal(fit_rows(_spec(holdout=0.2), rows, 2)[1], holdout)
    for spec in (_spec(holdout=None), _spec(patience=None, holdout=0.2)):  # no holdout, or no early stopping
        train, holdout = fit_rows(spec, rows, fold=1)
        assert np.array_equal(train, rows) and len(holdout) == 0
    assert [len(part) for part in fit_rows(_spec(holdout=0.5), np.arange(2), 0)] == [1, 1]  # never all rows
