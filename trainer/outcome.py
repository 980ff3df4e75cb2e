"""How a fit ended: the one classifier, shared by a sweep's trials, `zerotune train`, the refit and the results.

It reads what the fit recorded (an out-of-memory record, a diverged fold) before any error, so it never
has to recognise zerotune's own error messages; only the exception of a fit that recorded nothing is
looked at, by its type and by the allocator's words (torch's, CUDA's, the C library's), never ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trainer.records import FoldRecord, OomRecord


class Outcome(StrEnum):
    COMPLETED = "completed"
    PRUNED = "pruned"  # the scheduler stopped it after some folds
    DIVERGED = "diverged"
    OUT_OF_MEMORY = "out-of-memory"
    ERROR = "error"
    UNFINISHED = "unfinished"  # neither finished nor failed: still running, or its run died (resumable)
    INTERRUPTED = "interrupted"  # neither finished nor failed when its run was stopped: Ctrl+C, the storage watch

    @property
    def failed(self) -> bool:
        return self in (Outcome.DIVERGED, Outcome.OUT_OF_MEMORY, Outcome.ERROR)

    @property
    def trial_state(self) -> str:
        """The state a sweep shows for a trial that ended so (a value of sweeps.layout.TrialState)."""
        return "failed" if self.failed else self.value


@dataclass(frozen=True)
class Ended:
    outcome: Outcome
    reason: str | None = None  # where and why, for people: "at fold 0 epoch 1 step 3", an error's first line

    def __str__(self) -> str:
        if not self.reason:
            return self.outcome.value
        return f"{self.outcome.value}{': ' if self.outcome is Outcome.ERROR else ' '}{self.reason}"


# What allocators say when they fail: torch's CPU allocator, CUDA, and errno ENOMEM.
_ALLOCATOR_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException | str) -> bool:
    """An exception (or its text, when only that survived) that means the process ran out of memory."""
    if isinstance(exc, MemoryError) or type(exc).__name__ in ("OutOfMemoryError", "MemoryError"):
        return True
    text = str(exc).lower()
    return any(words in text for words in _ALLOCATOR_WORDS)


def classify(
    *,
    folds: list[FoldRecord],
    k: int,
    oom: OomRecord | None = None,
    error: BaseException | str | None = None,
    stopped: bool = False,
    interrupted: bool = False,
) -> Ended:
    """How a fit of `k` folds ended, from its records first, then its error; `stopped`: the scheduler ended it;
    `interrupted`: its run was stopped while it ran (not a result: the next run resumes it)."""
    if oom is not None:
        return Ended(Outcome.OUT_OF_MEMORY, f"at {oom.where()}")
    diverged = next((f.diverged for f in folds if f.diverged), None)
    if diverged is not None:
        where = f"fold {diverged['fold']} epoch {diverged['epoch']} step {diverged['step']} (loss {diverged['loss']})"
        return Ended(Outcome.DIVERGED, f"at {where}")
    if error is not None:
        if is_oom(error):
            return Ended(Outcome.OUT_OF_MEMORY)
        return Ended(Outcome.ERROR, (str(error).splitlines() or [type(error).__name__])[0][:300])
    if len(folds) >= k:
        return Ended(Outcome.COMPLETED)
    if stopped:
        return Ended(Outcome.PRUNED, f"stopped after {len(folds)} of {k} folds")
    return Ended(Outcome.INTERRUPTED if interrupted else Outcome.UNFINISHED)
