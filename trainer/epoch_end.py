"""What the worker loop (trainer.loop) does when an epoch ends, or a mid-epoch checkpoint is due: the fold's
record, its log line, its export, and the report with a checkpoint that Tune sees and a restart resumes from.

Every report is collective (every rank calls it, ZeRO-3 saves each rank's partition); records and progress are
written by rank 0.
"""

from __future__ import annotations

import logging
import sys
import time

from trainer import checkpoint
from trainer.checkpoint import ResumeState, Saved
from trainer.metrics import scalar_metrics
from trainer.progress import EpochResult, FoldEngine, FoldProgress, TrainedEpoch, fit_rows
from trainer.records import FitProgress, FoldRecord, rows_sha
from trainer.spec import EpochReport, FitSpec
from trainer.worker import Timings, Worker, memory_by_rank

log = logging.getLogger("zerotune.trainer")
# The key that marks a mid-epoch checkpoint's report (its micro-batches done): a sweep keeps these from Tune.
MID_EPOCH = "mid_epoch_steps"
# How often rank 0 rewrites its progress record within an epoch: often enough for a heartbeat every ~30 s, rarely
# enough to cost nothing next to the steps (one small write, also on object storage).
PROGRESS_EVERY_S = 10.0


def record_fold(w: Worker, fe: FoldEngine, result: EpochResult, progress: FoldProgress, *, stalled: bool) -> FoldRecord:
    """The fold's record (collective: memory is gathered from every rank); rank 0 writes it.

    Scored on the best epoch under early stopping, else on the last."""
    spec = w.spec
    val_rows = w.folds[fe.fold][1]
    early = bool(spec.train.early_stopping_patience)
    scored = progress.best if early else result
    record = FoldRecord(
        fold=fe.fold,
        epochs_run=result.epoch + 1,
        best_epoch=scored.epoch,
        metrics=scored.metrics,
        history=list(progress.history),
        val_sha=rows_sha(val_rows),
        n_train=int(len(fit_rows(w.spec, w.folds[fe.fold][0], fe.fold)[0])),
        n_val=int(len(val_rows)),
        stopped_early=bool(stalled and result.epoch < spec.train.epochs - 1),
        trainable_params=fe.trainable_params,
        total_params=fe.total_params,
        diverged=result.trained.diverged.to_json() if result.trained.diverged else None,
        resumes=fe.resumes,
        before=progress.before,
        memory=memory_by_rank(w.rss_start_mb, w.world),
        step_losses=[list(e) for e in progress.step_losses],
    )
    if w.lead and w.records:
        w.records.write_fold(record)
    return record


def log_epoch(w: Worker, fe: FoldEngine, result: EpochResult, *, stalled: bool) -> None:
    if not w.lead:
        return
    spec = w.spec
    rate = result.history_entry(w.world, spec.train.batch_size)["samples_per_s"] or 0
    line = (
        f"fold {fe.fold + 1}/{w.k} epoch {result.epoch + 1}/{spec.train.epochs}: train_loss {result.trained.loss:.4f} "
        f"{spec.metric} {result.score(spec.metric):.4f}, {rate:.1f} samples/s"
        + (" (early stop)" if stalled and not result.trained.diverged else "")
    )
    # Written, not printed: Ray Train patches print() in its workers to tee it to its console logger as well
    # (ray.train.v2 patch_print), which showed every line twice. stderr: stdout stays clean for --format json.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def report_epoch(
    w: Worker,
    fe: FoldEngine,
    result: EpochResult,
    progress: FoldProgress,
    *,
    folds: tuple[FoldRecord, ...],
    timings: Timings,
    save: bool,
) -> None:
    """The epoch's EpochReport, as FitSpec.report_metrics makes it, with a checkpoint (collective)."""
    report = EpochReport(
        fold=fe.fold,
        epoch=result.epoch,
        k=w.k,
        metric=w.spec.metric,
        metrics=scalar_metrics(result.metrics),
        folds=folds,
        timings=timings.now(),
        trainable_params=fe.trainable_params,
        total_params=fe.total_params,
        diverged=result.trained.diverged,
    )
    saved = Saved(
        fit=w.fit,
        fold=fe.fold,
        epoch=result.epoch,
        engine_saved=save,
        folds=folds,
        history=progress.history,
        resumes=fe.resumes,
        ranks=w.world,
        step_losses=progress.step_losses,
    )
    write_progress(w, fe, epoch=result.epoch, step=optimizer_steps(w, fe.micro_batches))
    with timings.timed("checkpoint_s"):
        checkpoint.report(_metrics(w.spec, report), engine=fe.engine, saved=saved, rank=w.rank)


def report_step(
    w: Worker,
    fe: FoldEngine,
    epoch: int,
    so_far: TrainedEpoch,
    progress: FoldProgress,
    *,
    folds: tuple[FoldRecord, ...],
    timings: Timings,
) -> None:
    """A mid-epoch checkpoint (train.checkpoint_every_steps), collective. Ray Train keeps checkpoints only with a
    report: it carries the latest epoch's metrics (or the fold's `before`) with the running training loss, marked
    MID_EPOCH so that a sweep does not show it to Tune as an epoch."""
    latest = scalar_metrics(progress.last.metrics) if progress.last else (progress.before or {})
    metrics = {**latest, "train_loss": so_far.loss}
    report = EpochReport(
        fold=fe.fold,
        epoch=epoch,
        k=w.k,
        metric=w.spec.metric,
        metrics=metrics,
        folds=folds,
        timings=timings.now(),
        trainable_params=fe.trainable_params,
        total_params=fe.total_params,
    )
    saved = Saved(
        fit=w.fit,
        fold=fe.fold,
        epoch=epoch,
        engine_saved=True,
        folds=folds,
        history=progress.history,
        resumes=fe.resumes,
        ranks=w.world,
        step_losses=progress.step_losses,
        partial=so_far.to_json(),
    )
    write_progress(w, fe, epoch=epoch, step=optimizer_steps(w, len(so_far.losses)))
    with timings.timed("checkpoint_s"):
        marked = {**_metrics(w.spec, report), MID_EPOCH: len(so_far.losses)}
        checkpoint.report(marked, engine=fe.engine, saved=saved, rank=w.rank)


def optimizer_steps(w: Worker, micro_batches: int) -> int:
    return micro_batches // w.spec.train.grad_accum


def write_progress(w: Worker, fe: FoldEngine, *, epoch: int, step: int, samples_per_s: float | None = None) -> None:
    """Where this fit is, for `zerotune sweep status` and the sweep's console view while it runs (rank 0)."""
    if w.lead and w.records:
        w.records.write_progress(
            FitProgress(
                fold=fe.fold,
                k=w.k,
                epoch=epoch,
                epochs=w.spec.train.epochs,
                step=step,
                steps=optimizer_steps(w, fe.micro_batches),
                time=time.time(),
                samples_per_s=None if samples_per_s is None else round(samples_per_s, 2),
            )
        )


class Heartbeat:
    """Rank 0's progress record within an epoch, every PROGRESS_EVERY_S: the driver's view prints its heartbeat
    line from it (a long epoch would otherwise show nothing until it ends). Not collective: no rank waits on it."""

    def __init__(self, w: Worker, fe: FoldEngine, epoch: int, *, done: int):
        self.w, self.fe, self.epoch = w, fe, epoch
        self.started, self.done, self.last = time.perf_counter(), done, time.perf_counter()

    def beat(self, micro_batches: int) -> None:
        now = time.perf_counter()
        if not (self.w.lead and self.w.records) or now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        samples = (micro_batches - self.done) * self.w.world * self.w.spec.train.batch_size
        rate = samples / (now - self.started) if now > self.started else None
        step = optimizer_steps(self.w, micro_batches)
        write_progress(self.w, self.fe, epoch=self.epoch, step=step, samples_per_s=rate)


def report_finished(w: Worker, resume: ResumeState) -> None:
    """Report the last epoch of a fit whose folds are all recorded again, without an engine."""
    last = resume.folds[-1]
    report = EpochReport.finished(list(resume.folds), k=w.k, metric=w.spec.metric)
    saved = Saved(
        fit=w.fit,
        fold=last.fold,
        epoch=last.epochs_run - 1,
        engine_saved=False,
        folds=resume.folds,
        history=tuple(last.history),
        resumes=resume.resumes,
        ranks=w.world,
    )
    checkpoint.report(_metrics(w.spec, report), engine=None, saved=saved, rank=w.rank, final=True)


def _metrics(spec: FitSpec, report: EpochReport) -> dict:
    return spec.report_metrics(report) if spec.report_metrics else report.flat()


def keeps_best(w: Worker, fold: int) -> bool:
    """Early stopping exports the best epoch's weights: keep a snapshot of them (fits that export only)."""
    return bool(w.spec.export_uri and w.spec.train.early_stopping_patience and fold == w.k - 1)


def export_fold(w: Worker, fe: FoldEngine, progress: FoldProgress) -> None:
    """After the last fold, export the model when the spec asks (collective under ZeRO-3)."""
    if not (w.spec.export_uri and fe.fold == w.k - 1):
        return
    from trainer.export import export_model

    if keeps_best(w, fe.fold) and progress.snapshot is None and w.lead:
        log.warning("the best epoch was before a restart: exporting the last epoch's weights")
    export_model(fe.engine, spec=w.spec, encoded=w.encoded, rank=w.rank, best=progress.snapshot)
