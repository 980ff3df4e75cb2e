"""What one worker group needs to run its fits (FitSpec), and what it reports after each epoch (EpochReport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from trainer.config import DeepSpeedConfig, ModelConfig, Task, TrainConfig
from trainer.records import Diverged, FoldRecord

TIMINGS = ("train_s", "eval_s", "setup_s", "checkpoint_s")  # what a worker group's time went on, summed over its folds


@dataclass(frozen=True)
class EpochReport:
    """One epoch of one fold, as the worker reports it: its metrics, the folds finished so far, the costs."""

    fold: int
    epoch: int
    k: int  # folds this worker group fits
    metric: str  # the metric folds are scored on (FitSpec.metric)
    metrics: dict  # this epoch's scalar metrics, train_loss included
    folds: tuple[FoldRecord, ...]  # the finished folds, this one included once it has ended
    timings: dict  # seconds per TIMINGS entry, this worker group so far
    trainable_params: int
    total_params: int
    diverged: Diverged | None = None

    def flat(self) -> dict:
        """Flat scalars: `epoch_<metric>`, fold, epoch, `time_<phase>`, parameter counts, and where it diverged.

        What a fit without FitSpec.report_metrics reports; a sweep adds its fold objective to these.
        """
        out = {f"epoch_{name}": value for name, value in self.metrics.items()}
        out.update(
            fold=self.fold, epoch=self.epoch, trainable_params=self.trainable_params, total_params=self.total_params
        )
        out.update({f"time_{phase}": self.timings.get(phase, 0.0) for phase in TIMINGS})
        if self.diverged is not None:
            out.update(diverged=1, diverged_at=json.dumps(self.diverged.to_json()))
        return out

    @classmethod
    def finished(cls, folds: list[FoldRecord], *, k: int, metric: str) -> EpochReport:
        """The last epoch of a fit whose folds are all recorded, told again from its records (nothing ran now)."""
        from trainer.metrics import scalar_metrics

        last = folds[-1]
        return cls(
            fold=last.fold,
            epoch=last.epochs_run - 1,
            k=k,
            metric=metric,
            metrics=scalar_metrics(last.metrics),
            folds=tuple(folds),
            timings=dict.fromkeys(TIMINGS, 0.0),
            trainable_params=last.trainable_params,
            total_params=last.total_params,
        )


@dataclass(frozen=True)
class FitSpec:
    """The config of the fits one worker group runs (one per fold)."""

    task: Task
    model: ModelConfig
    train: TrainConfig
    deepspeed: DeepSpeedConfig
    use_gpu: bool
    seed: int
    metric: str
    mode: str  # "max" or "min"
    checkpoint_every_epoch: bool = True
    records_uri: str | None = None  # where rank 0 writes fold records (JSON) and the effective DeepSpeed config
    export_uri: str | None = None  # after the last fold, export the model here (refit / `zerotune train`)
    # The metrics each epoch reports (to Ray Train, and so to Tune), from its EpochReport: a module-level
    # function, since workers unpickle it. None reports EpochReport.flat().
    report_metrics: Callable[[EpochReport], dict] | None = None
    probe_rows: tuple[int, ...] = ()  # rows whose engine predictions the export keeps (empty: the first rows)
    card: dict | None = None  # extra "- key: value" lines of the exported model card
    # How rows became tokens (trainer.preprocessing.recipe): the export records it for `zerotune predict`.
    preprocessing: dict | None = None
