"""A fit's records directory: what rank 0 writes while a fit runs, each record typed, with its read and write.

    <records>/fold-<i>.json                FoldRecord: one per finished fold
    <records>/starts/fold-<i>-<ns>.json    StartMarker: one per fold fit started (shows re-runs)
    <records>/oom-rank<r>.json             OomRecord: a rank ran out of memory, so a restart must not retry
    <records>/progress.json                FitProgress: where the running fold is (epoch ends, step checkpoints,
                                           and every PROGRESS_EVERY_S within an epoch)
    <records>/deepspeed.json               the effective DeepSpeed config (first fold)

Only this module spells these names; `sweeps.layout` says where a trial's records directory is.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from trainer.storage import join, list_dir, read_json, write_json
from zerotune.errors import StorageError


def rows_sha(rows) -> str:
    """Which rows a fold validated on: a record from another split never counts as this fold's."""
    return hashlib.sha1(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()


# The key, in a fold's metrics (FoldRecord.metrics), of its worst-predicted out-of-fold rows (trainer.evaluate): text,
# true and predicted label, confidence. The report shows the best trial's.
WORST_ROWS = "worst_rows"


class _Record:
    """JSON round trip: unknown keys in a stored record are ignored, missing optional ones take their default."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def read(cls, uri: str):
        """The record stored at `uri`; StorageError naming the file when it is not whole (truncated, keys missing)."""
        data = read_json(uri)
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(
                f"cannot read {uri} as a {cls.__name__}: {type(exc).__name__}: {exc}",
                field="storage.path",
                fix="the record is damaged (an interrupted write or a disk fault): restore it from a copy",
            ) from None


@dataclass(frozen=True)
class Diverged(_Record):
    """Where the (all-reduced) training loss first turned non-finite."""

    fold: int
    epoch: int
    step: int
    loss: str


@dataclass(frozen=True)
class FoldRecord(_Record):
    """One finished fold: its scored metrics (best epoch under early stopping, else the last), history and costs."""

    fold: int
    epochs_run: int
    best_epoch: int
    metrics: dict
    history: list[dict]
    val_sha: str
    n_train: int = 0
    n_val: int = 0
    stopped_early: bool = False
    trainable_params: int | None = None
    total_params: int | None = None
    diverged: dict | None = None  # Diverged.to_json()
    resumes: int = 0
    before: dict | None = None  # metrics before training (train.eval_before)
    memory: dict = field(default_factory=dict)  # per rank: resident MiB at start and peak
    step_losses: list[list[float]] = field(default_factory=list)  # per epoch: each micro-batch's training loss

    def score(self, metric: str) -> float:
        return float(self.metrics.get(metric, float("nan")))

    def worst_rows(self) -> list[dict]:
        """The fold's worst-predicted validation rows (none in a record written before they were kept)."""
        return list(self.metrics.get(WORST_ROWS) or [])


@dataclass(frozen=True)
class StartMarker(_Record):
    fold: int
    start_epoch: int
    pid: int
    time: float
    setup_s: float  # model load + DeepSpeed engine init
    start_step: int = 0  # micro-batches of start_epoch already done (a resume from a mid-epoch checkpoint)


@dataclass(frozen=True)
class FitProgress(_Record):
    """Where a running fit is: written at each epoch end and mid-epoch checkpoint (train.checkpoint_every_steps)."""

    fold: int
    k: int
    epoch: int
    epochs: int
    step: int  # optimizer steps done in `epoch`
    steps: int  # optimizer steps per epoch
    time: float
    samples_per_s: float | None = None  # the epoch so far, whole worker group (the heartbeat within an epoch)

    def where(self) -> str:
        return f"fold {self.fold + 1}/{self.k} epoch {self.epoch + 1}/{self.epochs} step {self.step}/{self.steps}"


@dataclass(frozen=True)
class OomRecord(_Record):
    fold: int
    epoch: int
    step: int | None  # None: out of memory outside a training step (evaluation)
    rank: int
    error: str

    def where(self) -> str:
        return f"fold {self.fold} epoch {self.epoch} step {self.step}"


class FitRecords:
    """Typed access to one fit's records directory (a local path or a URI)."""

    def __init__(self, uri: str):
        self.uri = uri

    def write_fold(self, record: FoldRecord) -> None:
        write_json(join(self.uri, f"fold-{record.fold}.json"), record.to_json())

    def folds(self) -> list[FoldRecord]:
        """The finished folds, in fold order."""
        names = [n for n in list_dir(self.uri) if n.startswith("fold-") and n.endswith(".json")]
        records = [FoldRecord.read(join(self.uri, n)) for n in names]
        return sorted(records, key=lambda r: r.fold)

    def write_start(self, marker: StartMarker, *, ns: int) -> None:
        write_json(join(self.uri, "starts", f"fold-{marker.fold}-{ns}.json"), marker.to_json())

    def starts(self) -> list[StartMarker]:
        """Every fold fit started, in the order they started."""
        where = join(self.uri, "starts")
        names = [n for n in list_dir(where) if n.startswith("fold-") and n.endswith(".json")]  # not a write's .tmp-
        names.sort(key=lambda n: int(n.rsplit("-", 1)[1].split(".")[0]))
        return [StartMarker.read(join(where, n)) for n in names]

    def write_oom(self, record: OomRecord) -> None:
        write_json(join(self.uri, f"oom-rank{record.rank}.json"), record.to_json())

    def oom(self) -> OomRecord | None:
        """The first out-of-memory record of the fit, or None."""
        names = sorted(n for n in list_dir(self.uri) if n.startswith("oom-") and n.endswith(".json"))
        return OomRecord.read(join(self.uri, names[0])) if names else None

    def write_progress(self, progress: FitProgress) -> None:
        write_json(join(self.uri, "progress.json"), progress.to_json())

    def progress(self) -> FitProgress | None:
        """Where the fit was when it last wrote its progress; None before that."""
        from trainer.storage import exists

        path = join(self.uri, "progress.json")
        return FitProgress.read(path) if exists(path) else None

    def write_deepspeed(self, config: dict) -> None:
        write_json(join(self.uri, "deepspeed.json"), config)

    def deepspeed(self) -> dict | None:
        from trainer.storage import exists

        path = join(self.uri, "deepspeed.json")
        return read_json(path) if exists(path) else None
