"""A fold's fit so far, typed: each epoch's result (TrainedEpoch, EpochResult), the best of them (FoldProgress), and
the fold's engine with where it starts (FoldEngine).

Pure values: the worker loop (trainer.loop) makes them, early stopping and the fold record read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from trainer.metrics import HOLDOUT, best_first, better, scalar_metrics
from trainer.records import Diverged
from trainer.spec import FitSpec


@dataclass(frozen=True)
class TrainedEpoch:
    """One pass over this rank's training shard (or the part of it done so far): the mean all-reduced loss, or
    where it turned non-finite."""

    loss: float
    step_times: tuple[float, ...]
    tokens: int  # this rank's real tokens
    padded_tokens: int  # with padding
    diverged: Diverged | None = None
    losses: tuple[float, ...] = ()  # each micro-batch's all-reduced loss, in order

    def to_json(self) -> dict:
        """What a mid-epoch checkpoint keeps of the epoch so far (it never holds a diverged epoch)."""
        return {
            "losses": list(self.losses),
            "step_times": list(self.step_times),
            "tokens": self.tokens,
            "padded_tokens": self.padded_tokens,
        }

    @classmethod
    def from_json(cls, data: dict) -> TrainedEpoch:
        losses = tuple(float(v) for v in data["losses"])
        return cls(
            loss=sum(losses) / max(len(losses), 1),
            step_times=tuple(data["step_times"]),
            tokens=int(data["tokens"]),
            padded_tokens=int(data["padded_tokens"]),
            losses=losses,
        )


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    trained: TrainedEpoch
    metrics: dict  # the evaluation's metrics, train_loss included
    seconds: float

    def score(self, metric: str) -> float:
        return float(self.metrics.get(metric, float("nan")))

    def history_entry(self, world: int, batch_size: int) -> dict:
        """Throughput of the steps themselves (median step, whole worker group): what the benchmarks compare."""
        times = self.trained.step_times
        entry = {
            "epoch": self.epoch,
            **scalar_metrics(self.metrics),
            "steps": len(times),
            "time": round(self.seconds, 2),
        }
        if not times:
            return {
                **entry,
                "step_s": float("nan"),
                "samples_per_s": None,
                "tokens_per_s": None,
                "padded_tokens_per_s": None,
            }
        step_s = float(np.median(times))
        return {
            **entry,
            "step_s": round(step_s, 4),
            "samples_per_s": round(world * batch_size / step_s, 2),
            "tokens_per_s": round(world * self.trained.tokens / sum(times), 1),
            "padded_tokens_per_s": round(world * self.trained.padded_tokens / sum(times), 1),
        }


@dataclass(frozen=True)
class FoldProgress:
    """A fold's epochs so far and the best of them (`snapshot`: its weights, when the export needs them)."""

    history: tuple[dict, ...] = ()
    best: EpochResult | None = None
    snapshot: dict | None = None
    before: dict | None = None  # metrics before training (train.eval_before)
    step_losses: tuple[tuple[float, ...], ...] = ()  # per epoch, each micro-batch's training loss
    last: EpochResult | None = None  # the latest epoch run by this worker group

    def add(self, result: EpochResult, entry: dict, spec: FitSpec) -> FoldProgress:
        picks = selection_metric(spec)
        improved = self.best is None or better(result.score(picks), self.best.score(picks), spec.mode)
        return dataclasses.replace(
            self,
            history=(*self.history, entry),
            best=result if improved else self.best,
            step_losses=(*self.step_losses, result.trained.losses),
            last=result,
        )

    def stalled(self, spec: FitSpec) -> bool:
        """Early stopping: `patience` epochs since the best one."""
        patience = spec.train.early_stopping_patience
        if not patience or len(self.history) <= patience:
            return False
        picks = selection_metric(spec)
        scores = [h.get(picks, float("nan")) for h in self.history]
        best_at = min(range(len(scores)), key=lambda i: best_first(scores[i], spec.mode))
        return len(scores) - 1 - best_at >= patience


@dataclass(frozen=True)
class FoldEngine:
    """One fold's DeepSpeed engine and what is fixed for its fit."""

    fold: int
    engine: object
    micro_batches: int  # per rank and epoch
    trainable_params: int
    total_params: int
    start_epoch: int  # > 0 when resumed mid-fold
    history: tuple[dict, ...]  # the epochs before a resume
    resumes: int
    setup_s: float  # model load + engine init (+ checkpoint load)
    step_losses: tuple[tuple[float, ...], ...] = ()  # the epochs before a resume: each micro-batch's loss
    so_far: TrainedEpoch | None = None  # resumed mid-epoch (train.checkpoint_every_steps): start_epoch's steps done


def selection_metric(spec: FitSpec) -> str:
    """The metric that picks a fold's best epoch: the holdout's when train.early_stopping_holdout is set."""
    return HOLDOUT + spec.metric if spec.train.early_stopping_holdout else spec.metric


def fit_rows(spec: FitSpec, rows: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(a fold's rows to train on, its rows held out to pick the early-stopping epoch): a seeded share of its
    training rows under train.early_stopping_holdout with early stopping on, never all of them; else none."""
    share = spec.train.early_stopping_holdout if spec.train.early_stopping_patience else None
    if not share or len(rows) < 2:
        return rows, rows[:0]
    order = np.random.default_rng([spec.seed, fold]).permutation(len(rows))
    n = min(len(rows) - 1, max(1, round(share * len(rows))))
    return np.sort(rows[order[n:]]), np.sort(rows[order[:n]])
