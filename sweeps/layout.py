"""What a sweep's storage holds: every path under `<storage.path>/<name>/`, its records' types, the trial states.

    config.json              the effective sweep config
    environment.json         packages, CUDA/GPUs, git commit, command line and config of the run that last started it
    folds.json               the folds and the held-out test rows (made once), with the data's fingerprint
    data.json                rows, dropped rows, label names, the trivial baseline
    summary.json             the sweep's summary (sweeps.results.collect)
    run.log                  the libraries' output of `zerotune sweep run` (sweeps.console): each run's appended (object
                             storage: the latest run's)
    pending.json             trials waiting for resources and what they wait for (sweeps.search.pending; refreshed)
    tune/                    Ray Tune's experiment state (resume)
    study.db                 the Optuna study (SQLite; sweeps.search.study: unless search.study_storage)
    trials/<id>/params.json  Params: the trial's sampled values and when it started
    trials/<id>/records/     the trial's fit records (trainer.records)
    trials/<id>/fit/         Ray Train's run directory (checkpoints)
    refit/<stamp>/           one refit: metrics.json, environment.json, records/, model/ and Ray Train's run directory,
                             all one fit's
    refit/latest.json        which refit/<stamp>/ is the newest that completed (written last)
    report/                  the report (zerotune report)
    tensorboard/<id>/[fold-<i>/]  TensorBoard event files: one run per trial and per fold (sweeps.tracking)
    train-<stamp>/           one `zerotune train` run: metrics.json, environment.json, records/, model/
    lease/claim-<ns>-<owner>.json  one claim per run that writes the sweep (sweeps.lease: one writer at a time)
    .write-test-<host>-<pid>-<thread>  a storage probe, written and deleted at once (each writer its own)

Only this module (and `trainer.records` inside a records directory) spells these names.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import socket
import stat
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from trainer.records import FitRecords
from trainer.storage import exists, filesystem, join, list_dir, local_path, read_json, write_json
from zerotune.errors import StorageError

ENVIRONMENT = "environment.json"  # zerotune.environment's record, of a sweep and of each fit that exports


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
    """One fit that exports (a refit, a `zerotune train` run): its metrics, records and model. The directory is
    also the fit's Ray Train run directory (its checkpoints), so everything in it comes from the one fit."""

    def __init__(self, uri: str):
        self.uri = uri
        self.metrics = join(uri, "metrics.json")
        self.environment = join(uri, ENVIRONMENT)
        self.records = join(uri, "records")
        self.model = join(uri, "model")

    def ray_run(self) -> tuple[str, str]:
        """(storage path, run name) that make Ray Train's run directory this directory."""
        uri = self.uri.rstrip("/")
        return posixpath.dirname(uri), posixpath.basename(uri)


class SweepDir:
    """The paths of one sweep directory, and typed reads and writes of its records."""

    def __init__(self, uri: str):
        self.uri = uri
        self.config = join(uri, "config.json")
        self.environment = join(uri, ENVIRONMENT)
        self.folds = join(uri, "folds.json")
        self.data = join(uri, "data.json")
        self.summary = join(uri, "summary.json")
        self.log = join(uri, "run.log")
        self.pending = join(uri, "pending.json")
        self.tune = join(uri, "tune")
        self.study = join(uri, "study.db")
        self.trials = join(uri, "trials")
        self.refit = join(uri, "refit")
        self.refit_latest = join(self.refit, "latest.json")
        self.report = join(uri, "report")
        self.lease = join(uri, "lease")
        self.tensorboard = join(uri, "tensorboard")

    @classmethod
    def of(cls, cfg) -> SweepDir:
        return cls(sweep_uri(cfg))

    def exists(self) -> bool:
        return exists(self.config)

    def trial(self, trial_id: str) -> TrialDir:
        return TrialDir(join(self.trials, trial_id))

    def tensorboard_run(self, trial_id: str, fold: int | None = None) -> str:
        """A TensorBoard run directory: the trial's, or one of its folds' (a subdirectory of the trial's)."""
        run = join(self.tensorboard, trial_id)
        return run if fold is None else join(run, f"fold-{fold}")

    def trial_ids(self) -> list[str]:
        return list_dir(self.trials)

    def train_run(self, stamp: str) -> FitDir:
        """One `zerotune train` run."""
        return FitDir(join(self.uri, f"train-{stamp}"))

    def new_refit(self) -> FitDir:
        """A directory of its own for one refit: never one an earlier refit wrote (its records, its checkpoints)."""
        return FitDir(join(self.refit, f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"))

    def mark_refit_complete(self, run: FitDir) -> None:
        """Point refit/latest.json at `run`; call it last, once the run's metrics, records and model are written."""
        write_json(self.refit_latest, {"run": run.ray_run()[1], "completed": time.time()})

    def latest_refit(self) -> FitDir | None:
        """The newest refit that completed, or None. (A sweep refitted before refits had directories of their
        own has its one refit directly in refit/.)"""
        if exists(self.refit_latest):
            return FitDir(join(self.refit, read_json(self.refit_latest)["run"]))
        legacy = FitDir(self.refit)
        return legacy if exists(legacy.metrics) else None

    def tune_state_files(self) -> list[str]:
        """Tune's saved experiment states, oldest first."""
        names = [n for n in list_dir(self.tune) if n.startswith("experiment_state-") and n.endswith(".json")]
        return [join(self.tune, n) for n in sorted(names)]

    def lease_claim(self, started: float, owner: str) -> str:
        """A runner's claim on the sweep (sweeps.lease); a name of its own, so no runner overwrites another's."""
        return join(self.lease, f"claim-{int(started * 1e9):020d}-{owner}.json")

    def lease_claims(self) -> list[str]:
        """Every runner's claim, oldest first (a claim being written, `*.json.tmp-<pid>`, is not one yet)."""
        return [join(self.lease, n) for n in list_dir(self.lease) if n.startswith("claim-") and n.endswith(".json")]

    def read(self, path: str, default=None):
        """A JSON record of this sweep, or `default` when it is not there."""
        return read_json(path) if exists(path) else default

    def write(self, path: str, obj) -> None:
        write_json(path, obj)


def probe_path(uri: str) -> str:
    """This writer's probe file under `uri`: each host, process and thread its own, so that two runs (or a run and
    its watch) never delete each other's probe."""
    return join(uri, f".write-test-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}")


def write_probe(uri: str) -> None:
    """Write and delete one file under `uri` (StorageError or OSError when that cannot be done)."""
    probe = probe_path(uri)
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


def check_trusted(uri: str) -> None:
    """Refuse to resume from a local sweep directory that someone else could have written.

    Resuming unpickles what the sweep stored (Tune's experiment state, DeepSpeed checkpoints through
    torch.load(weights_only=False)): whoever can write there can run code as this user. A world-writable
    directory (o+w) or one owned by another user is refused; group-writable is fine (a volume shared with the
    Ray user's group). Object stores are trusted through their access policies (README, "Trust").
    """
    local = local_path(uri)
    if local is None:
        return
    sweep = SweepDir(local)
    me = os.geteuid()
    for path in (sweep.uri, sweep.tune, sweep.trials):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue
        if info.st_mode & stat.S_IWOTH:
            why, fix = "is writable by every user (o+w)", f"`chmod o-w {path}`"
        elif info.st_uid != me:
            why, fix = f"is owned by uid {info.st_uid}, not by this user (uid {me})", f"`chown -R {me} {path}`"
        else:
            continue
        raise StorageError(
            f"refusing to resume from {path}: it {why}, and resuming loads pickled state from there",
            field="storage.path",
            fix=f"if you trust its content, {fix}; or copy the sweep directory to a path only you can write",
        )
