"""What each tracked run holds, from the sweep's own records: the one mapping every backend writes.

    sweep run   one per sweep: the search's settings, the best trial's mean/std, trial counts by state
    trial run   one per trial: its hyperparameters, each fold's score (step = fold), mean/std, state and why
    fold run    one per finished fold, nested under its trial: per-epoch metrics (step = epoch), the scored values

Values that are not finite numbers (a diverged loss, a metric a fold could not compute) are left out: backends
chart numbers, and the state and reason say what happened.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from trainer.records import FoldRecord

KIND = "zerotune.kind"  # sweep | trial | fold
SWEEP = "zerotune.sweep"  # the sweep's URI
SWEEP_ID = "zerotune.sweep_id"  # a hash of it: what backends search by (a URI may hold quotes)
TRIAL = "zerotune.trial_id"
FOLD = "zerotune.fold"
STATE = "zerotune.state"
REASON = "zerotune.reason"
SCORED = "scored_"  # prefix of a fold's scored values (its best epoch under early stopping, else its last)

# A trial's state (sweeps.layout.TrialState) as a run status every backend knows.
_STATUS = {
    "completed": "FINISHED",
    "pruned": "FINISHED",  # stopped by the scheduler: a result, not an error (the state tag says it was pruned)
    "failed": "FAILED",
    "unreadable": "FAILED",
    "interrupted": "KILLED",  # a resumed run takes it up again
}


@dataclass(frozen=True)
class Run:
    name: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    status: str = "RUNNING"  # RUNNING | FINISHED | FAILED | KILLED

    def metric(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of one metric, in the order logged."""
        return [(step, value) for k, value, step in self.metrics if k == key]


def trial_run(row: dict, *, metric: str, sweep: str) -> Run:
    """A trial's run from its summary row (sweeps.results.collect.trial_record): its hyperparameters, state and
    mean/std (each fold's score reaches it with the fold: fold_score)."""
    state = row["state"]
    tags = {KIND: "trial", **sweep_tags(sweep), TRIAL: row["trial_id"], STATE: state}
    if row.get("reason"):
        tags[REASON] = str(row["reason"])[:500]
    summary = [
        (f"{metric}_mean", row["mean"], 0),
        (f"{metric}_std", row["std"], 0),
        ("folds_done", row["folds_done"], 0),
        ("duration_s", row["duration_s"], 0),
    ]
    return Run(
        name=f"trial {row['trial_id']}",
        tags=tags,
        params=flat_params(row["params"]),
        metrics=_finite(summary),
        status=_STATUS.get(state, "RUNNING"),
    )


def fold_run(record: FoldRecord, *, trial_id: str, sweep: str) -> Run:
    """A finished fold's run: each epoch's numbers at step = epoch, then the values the fold is scored on."""
    tags = {
        KIND: "fold",
        **sweep_tags(sweep),
        TRIAL: trial_id,
        FOLD: str(record.fold),
        "best_epoch": str(record.best_epoch),
    }
    if record.stopped_early:
        tags["stopped_early"] = "true"
    if record.diverged:
        tags[REASON] = "diverged at epoch {epoch} step {step} (loss {loss})".format(**record.diverged)
    epochs = [
        (key, value, int(entry["epoch"]))
        for entry in record.history
        for key, value in entry.items()
        if key != "epoch" and _number(value)
    ]
    scored = [(SCORED + key, value, record.best_epoch) for key, value in record.metrics.items() if _number(value)]
    params = {
        "fold": record.fold,
        "n_train": record.n_train,
        "n_val": record.n_val,
        "epochs_run": record.epochs_run,
        "trainable_params": record.trainable_params,
        "total_params": record.total_params,
    }
    return Run(
        name=f"trial {trial_id} fold {record.fold}",
        tags=tags,
        params={k: str(v) for k, v in params.items() if v is not None},
        metrics=_finite(epochs + scored),
        status="FAILED" if record.diverged else "FINISHED",
    )


def fold_score(record: FoldRecord, *, metric: str) -> list[tuple[str, float, int]]:
    """What the trial's run charts of one fold: its score at step = fold (nothing for a fold with no finite score)."""
    return _finite([(metric, record.score(metric), record.fold)])


def sweep_tags(sweep: str) -> dict[str, str]:
    return {SWEEP: sweep, SWEEP_ID: hashlib.sha256(sweep.encode()).hexdigest()[:16]}


def sweep_run(cfg, *, sweep: str, summary: dict | None = None) -> Run:
    """The sweep's run: the search's settings; once the summary is written (`summary`), the best trial's scores
    and how the trials ended."""
    metric = cfg.metric
    params = {"task": cfg.task, "metric": metric, "mode": cfg.mode, "k": cfg.folds.k, "sampler": cfg.search.sampler}
    params["num_trials"] = cfg.search.num_trials
    tags = {KIND: "sweep", **sweep_tags(sweep)}
    if summary is None:
        return Run(name=cfg.name, tags=tags, params={k: str(v) for k, v in params.items()})
    best = summary.get("best") or {}
    metrics = [(f"trials_{state}", n, 0) for state, n in summary.get("states", {}).items()]
    if best:
        tags["best_trial"] = best["trial_id"]
        metrics += [(f"best_{metric}_mean", best["mean"], 0), (f"best_{metric}_std", best["std"], 0)]
    refit = (summary.get("refit") or {}).get("metrics") or {}
    metrics += [(f"test_{key}", value, 0) for key, value in refit.items() if _number(value)]  # the refit's test split
    baseline = summary.get("baseline") or {}
    if _number(baseline.get(metric)):  # the majority-class baseline on the same folds (sweeps.search.baseline)
        metrics.append((f"baseline_{metric}", baseline[metric], 0))
    return Run(
        name=cfg.name,
        tags=tags,
        params={k: str(v) for k, v in params.items()},
        metrics=_finite(metrics),
        status="KILLED" if summary.get("interrupted") else "FINISHED",
    )


def flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested hyperparameters as dotted keys with string values (what every backend's params take)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(metrics: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    return [(k, float(v), s) for k, v, s in metrics if _number(v) and math.isfinite(v)]
