"""When a resumed trial may skip its worker group: only with every fold recorded, on this sweep's split."""

import numpy as np

from sweeps.search.trial import finished_before
from trainer.records import FoldRecord, rows_sha

FOLDS = [(np.array([2, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3]))]


def _records(*vals, **extra):
    return [
        FoldRecord(fold=i, epochs_run=1, best_epoch=0, metrics={}, history=[], val_sha=rows_sha(v), **extra)
        for i, v in enumerate(vals)
    ]


def test_every_fold_recorded_on_its_rows_counts_as_finished():
    assert finished_before(_records([0, 1], [2, 3]), FOLDS)


def test_a_missing_fold_a_diverged_one_or_another_split_does_not():
    assert not finished_before(_records([0, 1]), FOLDS)
    assert not finished_before(_records([0, 1], [2, 3], diverged={"fold": 1}), FOLDS)
    assert not finished_before(_records([0, 2], [1, 3]), FOLDS)
