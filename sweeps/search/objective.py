"""What Tune sees of a sweep trial: each epoch's metrics plus the running fold mean the schedulers act on.

    objective          mean of the finished folds' scores (before the first fold ends: the current epoch's)
    objective_std      their standard deviation (0 with fewer than two)
    folds_done         finished folds: the schedulers' time attribute (ASHA and median stop on fold milestones)
    folds_total        the trial's folds
    fold<i>_<metric>   each finished fold's score

on top of the worker's own keys (trainer.spec.EpochReport.flat: epoch_<metric>, fold, epoch, time_<phase>,
parameter counts, diverged). `tune_metrics` is the FitSpec.report_metrics of sweep trials.
"""

from __future__ import annotations

import numpy as np

from trainer.records import FoldRecord
from trainer.spec import EpochReport


def tune_metrics(report: EpochReport) -> dict:
    """One epoch's report as Tune sees it (runs in the Ray Train workers)."""
    done = [f.score(report.metric) for f in report.folds]
    current = float(report.metrics.get(report.metric, float("nan")))
    out = report.flat()
    out.update(
        folds_done=len(done),
        folds_total=report.k,
        # Before the first fold ends, the running mean is the current epoch's score so that Tune always sees
        # the objective; schedulers only act on folds_done milestones.
        objective=float(np.mean(done)) if done else current,
        objective_std=float(np.std(done)) if len(done) > 1 else 0.0,
    )
    out.update({fold_key(i, report.metric): score for i, score in enumerate(done)})
    return out


def fold_key(fold: int, metric: str) -> str:
    return f"fold{fold}_{metric}"


def fold_scores(result: dict, metric: str) -> list[float]:
    """The finished folds' scores in a Tune result, in fold order (the searcher's intermediate values)."""
    scores = []
    while fold_key(len(scores), metric) in result:
        scores.append(float(result[fold_key(len(scores), metric)]))
    return scores


def completed_report(folds: list[FoldRecord], *, metric: str, k: int) -> dict:
    """The last report of a trial whose every fold is recorded, for Tune to see again after a restart."""
    return tune_metrics(EpochReport.finished(folds, k=k, metric=metric))
