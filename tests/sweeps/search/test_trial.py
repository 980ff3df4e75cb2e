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


def test_tune_sees_each_epochs_report_but_not_a_mid_epoch_checkpoints():
    """train.checkpoint_every_steps reports (Ray Train keeps a checkpoint only with a report) must not reach Tune as
    results: its schedulers and searcher count epochs and folds. Ray's own callback, outside a Tune session."""
    import queue

    from sweeps.search.trial import epoch_reports_class
    from trainer.epoch_end import MID_EPOCH

    cls = epoch_reports_class()
    callback = cls.__new__(cls)  # its __init__ needs a Tune session: the queue it finds there is a plain one here
    callback._training_actor_item_queue = told = queue.Queue()
    callback.after_report(None, [{"objective": 0.5, MID_EPOCH: 16}], checkpoint=None)
    callback.after_report(None, [{"objective": 0.7, "folds_done": 1}], checkpoint=None)
    assert told.get_nowait() == {"objective": 0.7, "folds_done": 1} and told.empty()
