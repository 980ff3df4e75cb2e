"""The Ray Train worker function, as a recipe: every phase below is one small function of this module.

    train_loop_per_worker
      setup                this rank's Worker (trainer.worker) and where to resume (trainer.checkpoint)
      for each fold left:
        fit_fold
          start_fold       model and DeepSpeed engine (loaded from the checkpoint when resuming mid-fold)
          for each epoch:
            run_epoch      train_epoch (train_step per batch), then evaluate (trainer.evaluate)
            record_fold    once the fold ends (last epoch, early stop or divergence): its FoldRecord
            export_fold    after the last fold's last epoch, when the spec exports (`zerotune train`, refits)
            report_epoch   the epoch's metrics with a checkpoint: what Tune sees and a restart resumes from

Every rank runs the same number of forward passes and `ray.train.report` calls (ZeRO-3 and Train V2 both
need that). Records go through trainer.records (rank 0; an out-of-memory record by the rank that ran out).
What an epoch reports is the spec's choice (FitSpec.report_metrics): this module knows nothing of Tune.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from trainer import checkpoint
from trainer.checkpoint import ResumeState, Saved
from trainer.ds_config import build_deepspeed_config
from trainer.evaluate import evaluate
from trainer.loss import training_loss
from trainer.metrics import HOLDOUT, scalar_metrics
from trainer.outcome import is_oom
from trainer.progress import EpochResult, FoldProgress, TrainedEpoch, fit_rows
from trainer.records import Diverged, FoldRecord, OomRecord, StartMarker, rows_sha
from trainer.spec import EpochReport, FitSpec
from trainer.worker import (
    Timings,
    Worker,
    all_reduce_mean,
    barrier,
    batches_per_rank,
    epoch_rows,
    memory_by_rank,
    setup,
)

log = logging.getLogger("zerotune.trainer")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's loop config {"fits": [trainer.launch.Fit, ...]}: the fits this worker group runs in turn.

    A restarted group skips the fits it had finished and resumes the one its checkpoint belongs to."""
    import ray.train

    resume = checkpoint.restore(ray.train.get_checkpoint())
    for index, fit in enumerate(config["fits"]):
        if index >= resume.fit:
            run_fit(setup(fit, index=index), resume if index == resume.fit else ResumeState(fit=index))


def run_fit(w: Worker, resume: ResumeState) -> None:
    """One fit: its folds left, from where `resume` says; every rank returns together."""
    oom = w.records.oom() if w.records else None
    if oom is not None:
        # The same batch would run out of memory again: end this fit, the driver fails it as out-of-memory.
        if w.lead:
            log.warning("not retrying: out of memory at %s", oom.where())
        return
    if w.records:  # a fold recorded after the checkpoint restored from was taken is not run again
        val_rows = [val for _, val in w.folds]
        resume = checkpoint.past_recorded_folds(resume, w.records, val_rows, exported=bool(w.spec.export_uri))
    if resume.folds and len(resume.folds) == w.k:
        # Restored after the last fold was recorded (the driver died before it saw the end): report the last
        # epoch again, because every fit's last result must carry what its caller reads (a sweep: the objective).
        report_finished(w, resume)
        return
    if w.lead and resume.fold is not None:
        log.warning("resuming at fold %d after epoch %d", resume.fold, resume.epoch)
    timings = Timings()
    for fold in range(len(resume.folds), w.k):
        folds = fit_fold(w, fold, resume, timings)
        if folds is None:
            return  # diverged: every rank saw the same all-reduced loss, so every rank stops here
        resume = ResumeState(fit=w.fit, folds=folds)
    barrier()


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


# --- the phases ---------------------------------------------------------------


def fit_fold(w: Worker, fold: int, resume: ResumeState, timings: Timings) -> tuple[FoldRecord, ...] | None:
    """Fit one fold epoch by epoch; returns the finished folds with this one, or None when its loss diverged."""
    spec, val_rows = w.spec, w.folds[fold][1]
    fe = start_fold(w, fold, resume)
    timings.add("setup_s", fe.setup_s)
    progress = FoldProgress(history=fe.history)
    if spec.train.eval_before and fe.start_epoch == 0:
        with recording_oom(w, fold, 0):
            progress = dataclasses.replace(progress, before=scalar_metrics(evaluate(w, fe.engine, val_rows)))
    folds = resume.folds
    for epoch in range(fe.start_epoch, spec.train.epochs):
        result = run_epoch(w, fe, epoch, timings)
        progress = progress.add(result, result.history_entry(w.world, spec.train.batch_size), spec)
        if _keeps_best(w, fold) and progress.best is result:
            from trainer.export import snapshot

            progress = dataclasses.replace(progress, snapshot=snapshot(fe.engine, spec=spec, encoded=w.encoded))
        stalled = progress.stalled(spec)
        last = epoch == spec.train.epochs - 1 or stalled or result.trained.diverged is not None
        if last:
            folds = (*folds, record_fold(w, fe, result, progress, stalled=stalled))
        log_epoch(w, fe, result, stalled=stalled)
        if last and result.trained.diverged is None:
            export_fold(w, fe, progress)  # before the report: a fit whose last checkpoint exists has its model
        report_epoch(w, fe, result, progress, folds=folds, timings=timings, save=spec.checkpoint_every_epoch or last)
        if result.trained.diverged is not None:
            return None
        if last:
            break
    return folds


def start_fold(w: Worker, fold: int, resume: ResumeState) -> FoldEngine:
    """Seeded model and DeepSpeed engine; from the checkpoint when resuming this fold. Rank 0 marks the start."""
    import torch

    from trainer.model import load_model

    t0 = time.perf_counter()
    torch.manual_seed(w.spec.seed * 1009 + fold)
    model = load_model(w.spec.model, w.spec.task, label_names=w.encoded.label_names)
    trained_on = fit_rows(w.spec, w.folds[fold][0], fold)[0]
    micro_batches = batches_per_rank(len(trained_on), w.world, w.spec.train.batch_size)
    if w.spec.train.max_steps_per_epoch:
        micro_batches = min(micro_batches, w.spec.train.max_steps_per_epoch * w.spec.train.grad_accum)
    # Counted before the engine partitions them: under ZeRO-3 each rank keeps empty placeholders.
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    engine, ds_config = _engine(w, model, micro_batches)
    mid_fold = resume.fold == fold
    if mid_fold:
        checkpoint.load_engine(engine, resume)
    fe = FoldEngine(
        fold=fold,
        engine=engine,
        micro_batches=micro_batches,
        trainable_params=trainable_params,
        total_params=total_params,
        start_epoch=resume.epoch + 1 if mid_fold else 0,
        history=resume.history if mid_fold else (),
        resumes=resume.resumes_of(fold),
        setup_s=time.perf_counter() - t0,
    )
    if w.lead and w.records:
        if fold == 0:
            w.records.write_deepspeed(ds_config)
        # One marker per fold fit started: an audit trail that shows re-runs (and, by pid, which worker group).
        marker = StartMarker(
            fold=fold, start_epoch=fe.start_epoch, pid=os.getpid(), time=time.time(), setup_s=round(fe.setup_s, 3)
        )
        w.records.write_start(marker, ns=time.time_ns())
    return fe


def _engine(w: Worker, model, micro_batches: int) -> tuple[object, dict]:
    """The DeepSpeed engine over `model`'s trainable parameters, and its effective config."""
    import deepspeed

    spec = w.spec
    ds_config = build_deepspeed_config(
        ds=spec.deepspeed,
        train=spec.train,
        world_size=w.world,
        steps_per_epoch=max(1, micro_batches // spec.train.grad_accum),
        device=w.device.type,
        bf16_supported=w.bf16,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
    if w.world == 1 and spec.deepspeed.zero_stage == 0:
        # An all-reduce over one rank is the identity, yet DeepSpeed still flattens, reduces and copies back
        # every gradient each step: skip it, as a single-process loop would.
        engine.enable_backward_allreduce = False
    return engine, ds_config


def run_epoch(w: Worker, fe: FoldEngine, epoch: int, timings: Timings) -> EpochResult:
    """Train one epoch, then evaluate on the fold's validation rows."""
    t0 = time.perf_counter()
    with timings.timed("train_s"):
        trained = train_epoch(w, fe, epoch)
    with timings.timed("eval_s"), recording_oom(w, fe.fold, epoch):
        metrics = evaluate(w, fe.engine, w.folds[fe.fold][1])
        holdout = fit_rows(w.spec, w.folds[fe.fold][0], fe.fold)[1]
        if len(holdout):  # train.early_stopping_holdout: these rows pick the epoch, the validation rows score it
            metrics.update({HOLDOUT + k: v for k, v in scalar_metrics(evaluate(w, fe.engine, holdout)).items()})
    metrics["train_loss"] = trained.loss
    return EpochResult(epoch=epoch, trained=trained, metrics=metrics, seconds=time.perf_counter() - t0)


def train_epoch(w: Worker, fe: FoldEngine, epoch: int) -> TrainedEpoch:
    """One pass over this rank's shard of a seeded shuffle of the fold's training rows."""
    batch = w.spec.train.batch_size
    train_rows = fit_rows(w.spec, w.folds[fe.fold][0], fe.fold)[0]  # less the early-stopping holdout
    rows = epoch_rows(train_rows, seed=w.spec.seed, fold=fe.fold, epoch=epoch, rank=w.rank, world=w.world)
    rows = rows[: fe.micro_batches * batch]
    fe.engine.train()
    losses, step_times, tokens, padded = [], [], 0, 0
    for step, start in enumerate(range(0, len(rows), batch)):
        t0 = time.perf_counter()
        loss, mask = train_step(w, fe, rows[start : start + batch], at=(fe.fold, epoch, step))
        value = all_reduce_mean(loss, w.world)
        if not math.isfinite(value):
            diverged = Diverged(fold=fe.fold, epoch=epoch, step=step, loss=str(value))
            return TrainedEpoch(float("nan"), tuple(step_times), tokens, padded, diverged=diverged)
        losses.append(value)
        step_times.append(time.perf_counter() - t0)
        tokens += int(mask.sum())
        padded += int(mask.numel())
    return TrainedEpoch(sum(losses) / max(len(losses), 1), tuple(step_times), tokens, padded)


def train_step(w: Worker, fe: FoldEngine, rows: np.ndarray, *, at: tuple[int, int, int]):
    """Forward, backward, optimizer step on one batch: (loss, attention mask).

    An out-of-memory error is recorded here, where its step is known, after the fault hook (if any) has
    undone what it changed."""
    with recording_oom(w, *at), w.hook(*at, len(rows)) if w.hook else nullcontext():
        inputs = w.inputs(rows)
        loss = training_loss(fe.engine, inputs, w.spec.task)
        fe.engine.backward(loss)
        fe.engine.step()
    return loss, inputs["attention_mask"]


@contextmanager
def recording_oom(w: Worker, fold: int, epoch: int, step: int | None = None) -> Iterator[None]:
    """Record an out-of-memory error raised in the block, where it happened (step None: outside a training step)."""
    try:
        yield
    except Exception as exc:
        if is_oom(exc):
            record_oom(w, exc, fold, epoch, step)
        raise


def record_oom(w: Worker, exc: BaseException, fold: int, epoch: int, step: int | None) -> None:
    """This rank's OomRecord, so that a restart stops and the fit is failed as out-of-memory."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # give back what the full GPU held, so the record can be written
    first_line = (str(exc).splitlines() or [""])[0][:300]
    record = OomRecord(fold=fold, epoch=epoch, step=step, rank=w.rank, error=f"{type(exc).__name__}: {first_line}")
    log.error("out of memory at %s (rank %d): %s", record.where(), w.rank, record.error)
    if w.records:
        w.records.write_oom(record)


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
    )
    if w.lead and w.records:
        w.records.write_fold(record)
    return record


def log_epoch(w: Worker, fe: FoldEngine, result: EpochResult, *, stalled: bool) -> None:
    if not w.lead:
        return
    spec = w.spec
    rate = result.history_entry(w.world, spec.train.batch_size)["samples_per_s"] or 0
    print(
        f"fold {fe.fold + 1}/{w.k} epoch {result.epoch + 1}/{spec.train.epochs}: train_loss {result.trained.loss:.4f} "
        f"{spec.metric} {result.score(spec.metric):.4f}, {rate:.1f} samples/s"
        + (" (early stop)" if stalled and not result.trained.diverged else ""),
        file=sys.stderr,
        flush=True,  # stdout stays clean for --format json
    )


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
    )
    with timings.timed("checkpoint_s"):
        checkpoint.report(_metrics(w.spec, report), engine=fe.engine, saved=saved, rank=w.rank)


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


def _keeps_best(w: Worker, fold: int) -> bool:
    """Early stopping exports the best epoch's weights: keep a snapshot of them (fits that export only)."""
    return bool(w.spec.export_uri and w.spec.train.early_stopping_patience and fold == w.k - 1)


def export_fold(w: Worker, fe: FoldEngine, progress: FoldProgress) -> None:
    """After the last fold, export the model when the spec asks (collective under ZeRO-3)."""
    if not (w.spec.export_uri and fe.fold == w.k - 1):
        return
    from trainer.export import export_model

    if _keeps_best(w, fe.fold) and progress.snapshot is None and w.lead:
        log.warning("the best epoch was before a restart: exporting the last epoch's weights")
    export_model(fe.engine, spec=w.spec, encoded=w.encoded, rank=w.rank, best=progress.snapshot)
