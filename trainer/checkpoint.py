"""Report an epoch with a checkpoint, and read back where a restarted worker group resumes.

A checkpoint holds the DeepSpeed engine (`engine/`, when saved), one manifest per rank of the engine files that
rank wrote (`engine-rank<r>.json`: names and sizes), and `state.json`: which fold and epoch it belongs to, the
folds finished so far, the fold's history and how often it was resumed; a mid-epoch checkpoint
(train.checkpoint_every_steps) also the epoch so far (`partial`: its micro-batches' losses, times and tokens), so
that a restart continues that epoch at its next micro-batch, in the same seeded row order. Ray Train keeps the last two
(trainer.launch) and hands a restarted worker the latest; a latest that is damaged (its `state.json` unreadable,
or engine files missing or shorter than their manifest says) is passed over for the one before it.
"""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.records import FoldRecord

log = logging.getLogger("zerotune.trainer")
ENGINE_TAG = "engine"
STATE = "state.json"
PREFIX = "checkpoint_"  # + time_ns: names sort by age
MANIFEST = "engine-rank{rank}.json"


@dataclass(frozen=True)
class Saved:
    """What `state.json` says: the epoch a checkpoint was taken after (or in, when `partial`), and the fit's
    progress then."""

    fit: int  # which of the worker group's fits (trainer.launch.Fit) it belongs to
    fold: int
    epoch: int
    engine_saved: bool
    folds: tuple[FoldRecord, ...]  # finished folds
    history: tuple[dict, ...]  # this fold's epochs so far
    resumes: int  # restarts of this fold so far
    ranks: int | None = None  # ranks that wrote an engine manifest (None: written before manifests)
    step_losses: tuple[tuple[float, ...], ...] = ()  # this fold's epochs so far: each micro-batch's loss
    partial: dict | None = None  # taken inside `epoch`: trainer.progress.TrainedEpoch.to_json() of its steps done

    def to_json(self) -> dict:
        return {
            "fit": self.fit,
            "fold": self.fold,
            "epoch": self.epoch,
            "engine_saved": self.engine_saved,
            "fold_results": [f.to_json() for f in self.folds],
            "history": list(self.history),
            "resumes": self.resumes,
            "ranks": self.ranks,
            "step_losses": [list(e) for e in self.step_losses],
            "partial": self.partial,
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
            ranks=data.get("ranks"),
            step_losses=tuple(tuple(e) for e in data.get("step_losses", ())),
            partial=data.get("partial"),
        )


@dataclass(frozen=True)
class ResumeState:
    """Where a fit starts: after the finished `folds`, and mid-fold when `checkpoint` is set.

    A restarted worker group skips its fits before `fit` (they finished) and resumes fit `fit` from here."""

    fit: int = 0
    folds: tuple[FoldRecord, ...] = ()
    fold: int | None = None  # the fold whose engine was saved after `epoch` (in it, when `partial`)
    epoch: int | None = None
    checkpoint: object | None = None  # the Ray Train checkpoint whose engine a mid-fold resume loads
    history: tuple[dict, ...] = ()
    resumes: int = 0
    restarts_fold: int | None = None  # the fold a restart begins from scratch (its engine was not saved)
    step_losses: tuple[tuple[float, ...], ...] = ()
    partial: dict | None = None  # Saved.partial: resume inside `epoch`

    def resumes_of(self, fold: int) -> int:
        """How often `fold` was restarted (0: this is its first run)."""
        return self.resumes if fold in (self.fold, self.restarts_fold) else 0


def restore(checkpoint) -> ResumeState:
    """Where to restart from: the Ray Train checkpoint `ray.train.get_checkpoint()` gives (or None), else the
    newest older one beside it that is whole. Nothing is copied: a mid-fold resume loads the engine later."""
    if checkpoint is None:
        return ResumeState()
    damaged = None  # the newest readable state whose engine files are not whole: its fold restarts
    for candidate in _newest_first(checkpoint):
        saved = _read_state(candidate)
        if saved is None:
            log.warning("passing over a checkpoint without a readable %s: %s", STATE, candidate.path)
            continue
        state = _resume_state(saved, candidate)
        if state is None:
            log.warning("passing over a checkpoint whose engine files are incomplete: %s", candidate.path)
            damaged = damaged or _restart_fold(saved)
            continue
        # An older checkpoint never costs a finished fold: the damaged one's folds win if it had more.
        return damaged if damaged is not None and len(damaged.folds) > len(state.folds) else state
    return damaged or ResumeState()


def past_recorded_folds(resume: ResumeState, records, val_rows: list, *, exported: bool) -> ResumeState:
    """`resume`, moved past the folds `records` (trainer.records.FitRecords) hold as finished after it.

    A fold is recorded just before its last report. A worker killed right after that report, before Ray Train's
    controller registered it, restarts from an older checkpoint, which would run the finished fold again. A record
    counts for the fold whose validation rows (`val_rows[fold]`) it names, unless it diverged. When the fit
    `exported`, its last fold is left to its checkpoint: the model is exported after the fold is recorded."""
    from trainer.records import rows_sha
    from zerotune.errors import StorageError

    try:
        recorded = {r.fold: r for r in records.folds()}
    except StorageError as exc:  # a damaged record: resume from the checkpoint alone
        log.warning("not reading the fold records: %s", exc.message)
        return resume
    folds, upto = list(resume.folds), len(val_rows) - int(exported)
    while len(folds) < upto and (r := recorded.get(len(folds))) is not None:
        if r.diverged or r.val_sha != rows_sha(val_rows[len(folds)]):
            break
        folds.append(r)
    if len(folds) == len(resume.folds):
        return resume
    log.warning("fold %d recorded as finished after the checkpoint resumed from: not run again", len(folds) - 1)
    return ResumeState(fit=resume.fit, folds=tuple(folds), resumes=1, restarts_fold=len(folds))


def _newest_first(checkpoint):
    """`checkpoint`, then the older ones Ray Train keeps beside it in the run directory, newest first.

    Ray Train gives a worker only its latest checkpoint; the others are the run directory's `checkpoint_*`
    directories. Newer ones are never used: their report may not have been registered (a worker died uploading)."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    yield checkpoint
    fs = checkpoint.filesystem
    run_dir, name = posixpath.split(checkpoint.path.rstrip("/"))
    try:
        infos = fs.get_file_info(pafs.FileSelector(run_dir))
    except OSError:
        return
    older = [
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and i.base_name.startswith(PREFIX) and i.base_name < name
    ]
    for other in sorted(older, reverse=True):
        yield Checkpoint(path=posixpath.join(run_dir, other), filesystem=fs)


def _read_state(checkpoint) -> Saved | None:
    try:
        with checkpoint.filesystem.open_input_stream(posixpath.join(checkpoint.path, STATE)) as src:
            return Saved.from_json(json.loads(src.read()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _resume_state(saved: Saved, checkpoint) -> ResumeState | None:
    """Where `saved` says a restart begins; None when that needs its engine and the engine files are not whole."""
    if len(saved.folds) > saved.fold:
        # Taken as its fold ended: the next fold restarts (its resumes count restarts of that fold, not this one).
        return ResumeState(fit=saved.fit, folds=saved.folds, resumes=1, restarts_fold=len(saved.folds))
    if not saved.engine_saved:
        return _restart_fold(saved)
    if not _engine_whole(checkpoint, saved):
        return None
    return ResumeState(
        fit=saved.fit,
        folds=saved.folds,
        fold=saved.fold,
        epoch=saved.epoch,
        checkpoint=checkpoint,
        history=saved.history,
        resumes=saved.resumes + 1,
        step_losses=saved.step_losses,
        partial=saved.partial,
    )


def _restart_fold(saved: Saved) -> ResumeState:
    """Keep the finished folds; the checkpoint's fold starts again from scratch."""
    return ResumeState(fit=saved.fit, folds=saved.folds, resumes=saved.resumes + 1, restarts_fold=len(saved.folds))


def _engine_whole(checkpoint, saved: Saved) -> bool:
    """Every rank's manifest is there, and every file it lists has its size."""
    import pyarrow.fs as pafs

    fs, root = checkpoint.filesystem, checkpoint.path
    if saved.ranks is None:  # written before manifests: the engine directory must at least be there
        return fs.get_file_info(posixpath.join(root, ENGINE_TAG)).type == pafs.FileType.Directory
    for rank in range(saved.ranks):
        try:
            with fs.open_input_stream(posixpath.join(root, MANIFEST.format(rank=rank))) as src:
                sizes = json.loads(src.read())["files"]
            infos = fs.get_file_info([posixpath.join(root, ENGINE_TAG, name) for name in sizes])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if any(i.type != pafs.FileType.File or i.size != sizes[name] for name, i in zip(sizes, infos, strict=True)):
            return False
    return True


def write_manifest(directory: str, *, rank: int) -> None:
    """This rank's manifest of the engine files it saved under `directory` (before Ray Train uploads it)."""
    engine = Path(directory, ENGINE_TAG)
    files = {str(p.relative_to(engine)): p.stat().st_size for p in sorted(engine.rglob("*")) if p.is_file()}
    Path(directory, MANIFEST.format(rank=rank)).write_text(json.dumps({"files": files}))


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
            write_manifest(tmp, rank=rank)
        if rank == 0:
            Path(tmp, STATE).write_text(json.dumps(saved.to_json(), default=float))
        name = f"{PREFIX}{time.time_ns()}_f{saved.fold:02d}_" + ("final" if final else f"e{saved.epoch:03d}")
        if saved.partial is not None:
            name += f"_s{len(saved.partial['losses']):06d}"
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)


def load_engine(engine, state: ResumeState) -> None:
    """Load the engine saved in `state.checkpoint`: in place on a local disk; from object storage through a
    temporary copy that is deleted once loaded (Checkpoint.as_directory), so no rank leaves a copy behind."""
    with state.checkpoint.as_directory() as local:
        engine.load_checkpoint(local, tag=ENGINE_TAG)
