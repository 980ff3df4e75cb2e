"""The Ray Train worker function, as a recipe: every phase below is one small function of this module.

    train_loop_per_worker
      setup                this rank's Worker (trainer.worker) and where to resume (trainer.checkpoint)
      for each fold left:
        fit_fold
          start_fold       model and DeepSpeed engine (loaded from the checkpoint when resuming mid-fold)
          for each epoch:
            run_epoch      train_epoch (train_step per batch; report_step every train.checkpoint_every_steps),
                           then evaluate (trainer.evaluate)
            record_fold    once the fold ends (last epoch, early stop or divergence): its FoldRecord
            export_fold    after the last fold's last epoch, when the spec exports (`zerotune train`, refits)
            report_epoch   the epoch's metrics with a checkpoint: what Tune sees and a restart resumes from

The epoch-end phases (record_fold, export_fold, report_epoch, report_step) are trainer.epoch_end's.

Every rank runs the same number of forward passes and `ray.train.report` calls (ZeRO-3 and Train V2 both
need that). Records go through trainer.records (rank 0; an out-of-memory record by the rank that ran out).
What an epoch reports is the spec's choice (FitSpec.report_metrics): this module knows nothing of Tune.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import numpy as np

from trainer import checkpoint
from trainer.checkpoint import ResumeState
from trainer.ds_config import build_deepspeed_config
from trainer.epoch_end import (
    Heartbeat,
    export_fold,
    keeps_best,
    log_epoch,
    record_fold,
    report_epoch,
    report_finished,
    report_step,
)
from trainer.evaluate import evaluate
from trainer.loss import training_loss
from trainer.metrics import HOLDOUT, scalar_metrics
from trainer.outcome import is_oom
from trainer.progress import EpochResult, FoldEngine, FoldProgress, TrainedEpoch, fit_rows
from trainer.records import Diverged, FoldRecord, OomRecord, StartMarker
from trainer.worker import Timings, Worker, all_reduce_mean, barrier, import_deepspeed, setup

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
        inside = f" at micro-batch {len(resume.partial['losses'])} of epoch" if resume.partial else " after epoch"
        log.warning("resuming at fold %d%s %d", resume.fold, inside, resume.epoch)
    timings = Timings()
    for fold in range(len(resume.folds), w.k):
        folds = fit_fold(w, fold, resume, timings)
        if folds is None:
            return  # diverged: every rank saw the same all-reduced loss, so every rank stops here
        resume = ResumeState(fit=w.fit, folds=folds)
    barrier()


# --- the phases ---------------------------------------------------------------


def fit_fold(w: Worker, fold: int, resume: ResumeState, timings: Timings) -> tuple[FoldRecord, ...] | None:
    """Fit one fold epoch by epoch; returns the finished folds with this one, or None when its loss diverged."""
    spec, val_rows = w.spec, w.folds[fold][1]
    fe = start_fold(w, fold, resume)
    timings.add("setup_s", fe.setup_s)
    progress = FoldProgress(history=fe.history, step_losses=fe.step_losses)
    if spec.train.eval_before and fe.start_epoch == 0 and fe.so_far is None:
        with recording_oom(w, fold, 0):
            progress = dataclasses.replace(progress, before=scalar_metrics(evaluate(w, fe.engine, val_rows)))
    folds = resume.folds
    for epoch in range(fe.start_epoch, spec.train.epochs):
        so_far = fe.so_far if epoch == fe.start_epoch else None
        save_step = functools.partial(report_step, w, fe, epoch, progress=progress, folds=folds, timings=timings)
        result = run_epoch(w, fe, epoch, timings, so_far=so_far, save_step=save_step)
        progress = progress.add(result, result.history_entry(w.world, spec.train.batch_size), spec)
        if keeps_best(w, fold) and progress.best is result:
            from trainer.export import snapshot

            progress = dataclasses.replace(progress, snapshot=snapshot(fe.engine, spec=spec, encoded=w.encoded))
        stalled = progress.stalled(spec)
        last = epoch == spec.train.epochs - 1 or stalled or result.trained.diverged is not None
        if last:
            folds = (*folds, record_fold(w, fe, result, progress, stalled=stalled))
        log_epoch(w, fe, result, stalled=stalled)
        if last and result.trained.diverged is None:
            export_fold(w, fe, progress)  # before the report: a fit whose last checkpoint exists has its model
        # With step checkpoints, an epoch's end keeps its engine too: a later report without one would send a
        # restart back to the fold's start, past the step checkpoints before it.
        save = spec.checkpoint_every_epoch or last or bool(spec.train.checkpoint_every_steps)
        report_epoch(w, fe, result, progress, folds=folds, timings=timings, save=save)
        if result.trained.diverged is not None:
            return None
        if last:
            break
    return folds


def start_fold(w: Worker, fold: int, resume: ResumeState) -> FoldEngine:
    """Seeded model and DeepSpeed engine; from the checkpoint when resuming this fold. Rank 0 marks the start."""
    import torch

    from trainer.model import load_for_fit, parameter_count, partitioned_loading

    t0 = time.perf_counter()
    torch.manual_seed(w.spec.seed * 1009 + fold)
    trained_on = fit_rows(w.spec, w.folds[fold][0], fold)[0]
    micro_batches = epoch_micro_batches(w.batches_per_epoch(trained_on), w.spec.train)  # packed under data.packing
    ds_config = _ds_config(w, micro_batches)
    with partitioned_loading(ds_config, w.spec.model, w.spec.task):  # ZeRO-3 causal LMs: each rank its partition
        model = load_for_fit(w.spec, label_names=w.encoded.label_names, device=w.device.type, bf16_supported=w.bf16)
        trainable_params, total_params = parameter_count(model, trainable=True), parameter_count(model)
        engine = _engine(w, model, ds_config)
    mid_fold = resume.fold == fold
    if mid_fold:
        checkpoint.load_engine(engine, resume)
    mid_epoch = mid_fold and resume.partial is not None  # saved inside resume.epoch: continue that epoch
    fe = FoldEngine(
        fold=fold,
        engine=engine,
        micro_batches=micro_batches,
        trainable_params=trainable_params,
        total_params=total_params,
        start_epoch=resume.epoch + (0 if mid_epoch else 1) if mid_fold else 0,
        history=resume.history if mid_fold else (),
        resumes=resume.resumes_of(fold),
        setup_s=time.perf_counter() - t0,
        step_losses=resume.step_losses if mid_fold else (),
        so_far=TrainedEpoch.from_json(resume.partial) if mid_epoch else None,
    )
    if w.lead and w.records:
        if fold == 0:
            w.records.write_deepspeed(ds_config)
        # One marker per fold fit started: an audit trail that shows re-runs (and, by pid, which worker group).
        marker = StartMarker(
            fold=fold,
            start_epoch=fe.start_epoch,
            pid=os.getpid(),
            time=time.time(),
            setup_s=round(fe.setup_s, 3),
            start_step=len(fe.so_far.losses) if fe.so_far else 0,
        )
        w.records.write_start(marker, ns=time.time_ns())
    return fe


def epoch_micro_batches(available: int, train) -> int:
    """Micro-batches per rank an epoch trains: whole accumulation cycles only (at least one), at most
    train.max_steps_per_epoch optimizer steps. DeepSpeed counts its accumulation boundary over the whole fold (and
    from 0 again after a checkpoint load), the step checkpoints from each epoch's start: only epochs of whole cycles
    keep the two on the same micro-batches. The LR schedule (`_ds_config`) counts this over grad_accum steps."""
    steps = max(1, available // train.grad_accum)
    if train.max_steps_per_epoch:
        steps = min(steps, train.max_steps_per_epoch)
    return steps * train.grad_accum


def _ds_config(w: Worker, micro_batches: int) -> dict:
    """The fit's DeepSpeed config; built before the model, which ZeRO-3 loads partitioned by it."""
    return build_deepspeed_config(
        ds=w.spec.deepspeed,
        train=w.spec.train,
        world_size=w.world,
        steps_per_epoch=micro_batches // w.spec.train.grad_accum,  # whole cycles: epoch_micro_batches
        device=w.device.type,
        bf16_supported=w.bf16,
    )


def _engine(w: Worker, model, ds_config: dict):
    """The DeepSpeed engine over `model`'s trainable parameters."""
    deepspeed = import_deepspeed()

    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
    if w.world == 1 and w.spec.deepspeed.zero_stage == 0:
        # An all-reduce over one rank is the identity, yet DeepSpeed still flattens, reduces and copies back
        # every gradient each step: skip it, as a single-process loop would.
        engine.enable_backward_allreduce = False
    return engine


def run_epoch(
    w: Worker,
    fe: FoldEngine,
    epoch: int,
    timings: Timings,
    *,
    so_far: TrainedEpoch | None = None,
    save_step: Callable[[TrainedEpoch], None] | None = None,
) -> EpochResult:
    """Train one epoch (the rest of it after `so_far`), then evaluate on the fold's validation rows."""
    t0 = time.perf_counter()
    with timings.timed("train_s"):
        trained = train_epoch(w, fe, epoch, so_far=so_far, save_step=save_step)
    with timings.timed("eval_s"), recording_oom(w, fe.fold, epoch):
        metrics = evaluate(w, fe.engine, w.folds[fe.fold][1])
        holdout = fit_rows(w.spec, w.folds[fe.fold][0], fe.fold)[1]
        if len(holdout):  # train.early_stopping_holdout: these rows pick the epoch, the validation rows score it
            picked = evaluate(w, fe.engine, holdout, generate=False)  # generations of holdout rows: never read
            metrics.update({HOLDOUT + k: v for k, v in scalar_metrics(picked).items()})
    metrics["train_loss"] = trained.loss
    return EpochResult(epoch=epoch, trained=trained, metrics=metrics, seconds=time.perf_counter() - t0)


def train_epoch(
    w: Worker,
    fe: FoldEngine,
    epoch: int,
    *,
    so_far: TrainedEpoch | None = None,
    save_step: Callable[[TrainedEpoch], None] | None = None,
) -> TrainedEpoch:
    """One pass over this rank's shard of a seeded shuffle of the fold's training rows; after `so_far` (a mid-epoch
    checkpoint's steps), the same shuffle's remaining batches. `save_step` checkpoints the epoch so far (collective)
    every train.checkpoint_every_steps optimizer steps, at an accumulation boundary, except at the epoch's end."""
    train_rows = fit_rows(w.spec, w.folds[fe.fold][0], fe.fold)[0]  # less the early-stopping holdout
    batches = w.epoch_batches(train_rows, fold=fe.fold, epoch=epoch)  # rows (or Packed)
    # Fewer batches than one accumulation cycle: the shuffle's first ones again, so that the epoch ends on a step.
    batches = (batches * -(-fe.micro_batches // max(len(batches), 1)))[: fe.micro_batches]
    every = (w.spec.train.checkpoint_every_steps or 0) * w.spec.train.grad_accum  # in micro-batches
    fe.engine.train()
    done = so_far or TrainedEpoch(0.0, (), 0, 0)
    losses, step_times, tokens, padded = list(done.losses), list(done.step_times), done.tokens, done.padded_tokens
    heartbeat = Heartbeat(w, fe, epoch, done=len(losses))
    for step in range(len(losses), len(batches)):
        t0 = time.perf_counter()
        loss, mask = train_step(w, fe, batches[step], at=(fe.fold, epoch, step))
        value = all_reduce_mean(loss, w.world)
        if not math.isfinite(value):
            diverged = Diverged(fold=fe.fold, epoch=epoch, step=step, loss=str(value))
            return TrainedEpoch(float("nan"), tuple(step_times), tokens, padded, diverged=diverged)
        losses.append(value)
        step_times.append(time.perf_counter() - t0)
        tokens += int(mask.sum())
        padded += int(mask.numel())
        if save_step and every and (step + 1) % every == 0 and step + 1 < len(batches):
            save_step(TrainedEpoch(sum(losses) / len(losses), tuple(step_times), tokens, padded, losses=tuple(losses)))
        heartbeat.beat(len(losses))
    return TrainedEpoch(sum(losses) / max(len(losses), 1), tuple(step_times), tokens, padded, losses=tuple(losses))


def train_step(w: Worker, fe: FoldEngine, rows: np.ndarray, *, at: tuple[int, int, int]):
    """Forward, backward, optimizer step on one batch: (loss, attention mask).

    An out-of-memory error is recorded here, where its step is known, after the fault hook (if any) has
    undone what it changed."""
    with recording_oom(w, *at), w.hook(*at, len(rows)) if w.hook else nullcontext():
        inputs = w.inputs(rows)
        loss = training_loss(fe.engine, inputs, w.spec.task)
        fe.engine.backward(loss)
        fe.engine.step()
    return loss, w.token_mask(rows, inputs)


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
