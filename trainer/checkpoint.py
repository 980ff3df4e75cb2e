"""Report an epoch with a checkpoint, and read back where a restarted worker group resumes.

A checkpoint holds the DeepSpeed engine (`engine/`, when saved) and `state.json`: which fold and epoch
it belongs to, the folds finished so far, the fold's history and how often it was resumed. A
checkpoint without a complete `state.json` is ignored (its engine files cannot be placed).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.records import FoldRecord

log = logging.getLogger("zerotune.trainer")
ENGINE_TAG = "engine"
STATE = "state.json"


@dataclass(frozen=True)
class Saved:
    """What `state.json` says: the epoch a checkpoint was taken after, and the fit's progress then."""

    fit: int  # which of the worker group's fits (trainer.launch.Fit) it belongs to
    fold: int
    epoch: int
    engine_saved: bool
    folds: tuple[FoldRecord, ...]  # finished folds
    history: tuple[dict, ...]  # this fold's epochs so far
    resumes: int  # restarts of this fold so far

    def to_json(self) -> dict:
        return {
            "fit": self.fit,
            "fold": self.fold,
            "epoch": self.epoch,
            "engine_saved": self.engine_saved,
            "fold_results": [f.to_json() for f in self.folds],
            "history": list(self.history),
            "resumes": self.resumes,
        }

    @classmethod
    def from_json(cls, data: dict) -> Saved:
        return cls(
            fit=data.get("fit", 0),
            fold=data["fold"],
            epoch=data["epoch"],
            engine_saved=bool(data.get("engine_saved")),
            folds=tuple(FoldRecord.from_json(f) for f in data["fold_results"]),
            history=tuple(data["history"]),
            resumes=data.get("resumes", 0),
        )


@dataclass(frozen=True)
class ResumeState:
    """Where a fit starts: after the finished `folds`, and mid-fold when `engine_dir` is set.

    A restarted worker group skips its fits before `fit` (they finished) and resumes fit `fit` from here."""

    fit: int = 0
    folds: tuple[FoldRecord, ...] = ()
    fold: int | None = None  # the fold whose engine was saved after `epoch`
    epoch: int | None = None
    engine_dir: str | None = None
    history: tuple[dict, ...] = ()
    resumes: int = 0
    restarts_fold: int | None = None  # the fold a restart begins from scratch (its engine was not saved)

    def resumes_of(self, fold: int) -> int:
        """How often `fold` was restarted (0: this is its first run)."""
        return self.resumes if fold in (self.fold, self.restarts_fold) else 0


def restore(checkpoint) -> ResumeState:
    """Where to restart from (a Ray Train checkpoint or None)."""
    if checkpoint is None:
        return ResumeState()
    local = Path(tempfile.mkdtemp(prefix="zt-restore-"))
    checkpoint.to_directory(str(local))
    try:
        saved = Saved.from_json(json.loads((local / STATE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring a checkpoint without a readable %s: %s", STATE, checkpoint.path)
        return ResumeState()
    resumes = saved.resumes + 1
    fold_done = len(saved.folds) > saved.fold  # the checkpoint was taken as its fold ended
    if fold_done or not saved.engine_saved or not (local / ENGINE_TAG).is_dir():
        return ResumeState(fit=saved.fit, folds=saved.folds, resumes=resumes, restarts_fold=len(saved.folds))
    return ResumeState(
        fit=saved.fit,
        folds=saved.folds,
        fold=saved.fold,
        epoch=saved.epoch,
        engine_dir=str(local),
        history=saved.history,
        resumes=resumes,
    )


def report(metrics: dict, *, engine, saved: Saved, rank: int, final: bool = False) -> None:
    """Report `metrics` with a checkpoint (Train V2 keeps metrics only with one); every rank calls this.

    The engine is saved when `saved.engine_saved` (collectively: every rank writes its partition). `final`:
    the report of a fit whose folds were all recorded before a restart, told again. Each report's checkpoint
    has a name of its own (rank 0's clock; Ray Train gives every rank rank 0's name), so a later report never
    lands in a directory that the retention of an earlier one is about to delete.
    """
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="zt-ckpt-") as tmp:
        if saved.engine_saved:
            engine.save_checkpoint(tmp, tag=ENGINE_TAG)
        if rank == 0:
            Path(tmp, STATE).write_text(json.dumps(saved.to_json(), default=float))
        name = f"checkpoint_{time.time_ns()}_f{saved.fold:02d}_" + ("final" if final else f"e{saved.epoch:03d}")
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def load_engine(engine, state: ResumeState) -> None:
    engine.load_checkpoint(state.engine_dir, tag=ENGINE_TAG)
