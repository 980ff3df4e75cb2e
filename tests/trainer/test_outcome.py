"""How a fit ended (trainer.outcome.classify): from its records first, an error's type and allocator words last."""

import pytest

from trainer.outcome import Outcome, classify, is_oom
from trainer.records import FoldRecord, OomRecord


def _folds(n, diverged_at=None):
    return [
        FoldRecord(
            fold=i,
            epochs_run=1,
            best_epoch=0,
            metrics={},
            history=[],
            val_sha="x",
            diverged={"fold": i, "epoch": 0, "step": 2, "loss": "nan"} if i == diverged_at else None,
        )
        for i in range(n)
    ]


OOM = OomRecord(fold=0, epoch=1, step=4, rank=0, error="RuntimeError: can't allocate memory")


def test_out_of_memory_errors_are_recognised_by_type_and_allocator_words():
    import torch

    assert is_oom(MemoryError()) and is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom(RuntimeError("shape mismatch"))


@pytest.mark.parametrize(
    ("kwargs", "outcome"),
    [
        ({"folds": _folds(3), "k": 3}, Outcome.COMPLETED),
        ({"folds": _folds(1), "k": 3, "stopped": True}, Outcome.PRUNED),
        ({"folds": _folds(1), "k": 3}, Outcome.UNFINISHED),
        # Stopped by Ctrl+C (or the storage watch) while it ran: resumable, neither a result nor a failure.
        ({"folds": _folds(1), "k": 3, "interrupted": True}, Outcome.INTERRUPTED),
        ({"folds": _folds(3), "k": 3, "interrupted": True}, Outcome.COMPLETED),  # it had finished: a result
        ({"folds": _folds(2, diverged_at=1), "k": 3}, Outcome.DIVERGED),
        # The records decide, whatever the error says (it may be any wrapper's text, or lost).
        ({"folds": _folds(2, diverged_at=1), "k": 3, "error": RuntimeError("worker group failed")}, Outcome.DIVERGED),
        ({"folds": _folds(0), "k": 3, "oom": OOM, "error": RuntimeError("diverged")}, Outcome.OUT_OF_MEMORY),
        ({"folds": _folds(0), "k": 3, "oom": OOM}, Outcome.OUT_OF_MEMORY),
        ({"folds": _folds(0), "k": 3, "error": MemoryError()}, Outcome.OUT_OF_MEMORY),
        ({"folds": _folds(3), "k": 3, "error": ValueError("bad")}, Outcome.ERROR),
    ],
)
def test_classify(kwargs, outcome):
    ended = classify(**kwargs)
    assert ended.outcome is outcome and ended.outcome.failed == (
        outcome in (Outcome.DIVERGED, Outcome.OUT_OF_MEMORY, Outcome.ERROR)
    )


def test_each_outcome_is_one_trial_state():
    # The failures share one state (their reason tells them apart); an interrupted trial is not an unfinished one.
    assert {o: o.trial_state for o in Outcome} == {
        Outcome.COMPLETED: "completed",
        Outcome.PRUNED: "pruned",
        Outcome.DIVERGED: "failed",
        Outcome.OUT_OF_MEMORY: "failed",
        Outcome.ERROR: "failed",
        Outcome.UNFINISHED: "unfinished",
        Outcome.INTERRUPTED: "interrupted",
    }
