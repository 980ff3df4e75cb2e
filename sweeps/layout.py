"""What a sweep's storage holds: every path under `<storage.path>/<name>/`, its records' types, the trial states.

    config.json              the effective sweep config
    folds.json               the folds and the held-out test rows (made once), with the data's fingerprint
    data.json                rows, dropped rows, label names, the trivial baseline
    summary.json             the sweep's summary (sweeps.results.collect)
    tune/                    Ray Tune's experiment state (resume)
    trials/<id>/params.json  Params: the trial's sampled values and when it started
    trials/<id>/records/     the trial's fit records (trainer.records)
    trials/<id>/fit/         Ray Train's run directory (checkpoints)
    refit/                   metrics.json, records/, model/ of the refit
    report/                  the report (zerotune report)
    train-<stamp>/           one `zerotune train` run: metrics.json, records/, model/

Only this module (and `trainer.records` inside a records directory) spells these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

from trainer.records import FitRecords
from trainer.storage import exists, filesystem, join, list_dir, read_json, write_json
from zerotune.errors import StorageError


class TrialState(StrEnum):
    COMPLETED = "completed"  # every fold scored
    PRUNED = "pruned"  # stopped by the scheduler after some folds
    FAILED = "failed"  # diverged, out of memory or an error
    UNFINISHED = "unfinished"  # started, neither finished nor failed (an interrupted sweep resumes it)
    INTERRUPTED = "interrupted"  # stopped by the user or the storage watch
    UNREADABLE = "unreadable"  # its records cannot be read
    PENDING = "pending"  # waiting for resources


def storage_root(path: str) -> str:
    """Absolute: trial actors and workers run in other working directories."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def sweep_uri(cfg) -> str:
    return join(storage_root(cfg.storage.path), cfg.name)


@dataclass(frozen=True)
class Params:
    """A trial's sampled values and when it started."""

    params: dict
    started: float | None = None


class TrialDir:
    run_name = "fit"  # Ray Train's run directory (checkpoints) under the trial

    def __init__(self, uri: str):
        self.uri = uri
        self.records = FitRecords(join(uri, "records"))

    def write_params(self, params: Params) -> None:
        write_json(join(self.uri, "params.json"), {"params": params.params, "started": params.started})

    def params(self) -> Params:
        path = join(self.uri, "params.json")
        if not exists(path):
            return Params(params={})
        saved = read_json(path)
        return Params(params=saved.get("params") or {}, started=saved.get("started"))


class FitDir:
    """One fit that exports (a refit, a `zerotune train` run): its metrics, records and model."""

    def __init__(self, uri: str):
        self.uri = uri
        self.metrics = join(uri, "metrics.json")
        self.records = join(uri, "records")
        self.model = join(uri, "model")


class SweepDir:
    """The paths of one sweep directory, and typed reads and writes of its records."""

    refit_run_name = "refit-fit"  # Ray Train's run directory (checkpoints) under refit/

    def __init__(self, uri: str):
        self.uri = uri
        self.config = join(uri, "config.json")
        self.folds = join(uri, "folds.json")
        self.data = join(uri, "data.json")
        self.summary = join(uri, "summary.json")
        self.tune = join(uri, "tune")
        self.trials = join(uri, "trials")
        self.refit = join(uri, "refit")
        refit = FitDir(self.refit)
        self.refit_metrics, self.refit_model, self.refit_records = refit.metrics, refit.model, refit.records
        self.report = join(uri, "report")

    @classmethod
    def of(cls, cfg) -> SweepDir:
        return cls(sweep_uri(cfg))

    def exists(self) -> bool:
        return exists(self.config)

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(join(self.trials, trial_id))

    def trial_ids(self) -> list[str]:
        return list_dir(self.trials)

    def train_run(self, stamp: str) -> FitDir:
        """One `zerotune train` run."""
        return FitDir(join(self.uri, f"train-{stamp}"))

    def tune_state_files(self) -> list[str]:
        """Tune's saved experiment states, oldest first."""
        names = [n for n in list_dir(self.tune) if n.startswith("experiment_state-") and n.endswith(".json")]
        return [join(self.tune, n) for n in sorted(names)]

    def read(self, path: str, default=None):
        """A JSON record of this sweep, or `default` when it is not there."""
        return read_json(path) if exists(path) else default

    def write(self, path: str, obj) -> None:
        write_json(path, obj)


def write_probe(uri: str) -> None:
    """Write and delete one file under `uri` (StorageError or OSError when that cannot be done)."""
    probe = join(uri, ".write-test")
    write_json(probe, {"ok": True})
    fs, path = filesystem(probe)
    fs.delete_file(path)


def check_writable(uri: str, *, keep: bool = True) -> None:
    """Probe the storage now, not after hours of training. keep=False leaves no directory behind."""
    existed = exists(uri)
    try:
        write_probe(uri)
    except StorageError as exc:
        raise StorageError(
            exc.message,
            field="storage.path",
            fix="choose a storage.path this user can write (and that every node can reach)",
        ) from None
    if not keep and not existed:
        fs, path = filesystem(uri)
        fs.delete_dir(path)
