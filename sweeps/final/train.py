"""`zerotune train`: one fit on a train/validation split, with export and a metrics JSON."""

from __future__ import annotations

import logging
import posixpath
import time

from sweeps.config import SweepConfig
from sweeps.layout import SweepDir
from sweeps.preflight.checks import check_fit
from sweeps.preflight.data import encode, fit_spec, load_examples
from sweeps.search.folds import train_val_split
from trainer.outcome import Outcome, classify
from trainer.records import FitRecords, FoldRecord
from trainer.storage import write_json
from zerotune.errors import TrainingError

log = logging.getLogger(__name__)

OOM_FIX = (
    "lower train.batch_size (raise train.grad_accum to keep the global batch) or model.max_length, "
    "or use deepspeed.zero_stage 3 / offload"
)


def run_fit(cfg: SweepConfig, *, address: str | None = None, export: bool = True, worker_logs: bool = True) -> dict:
    """Split, tokenize, train on a Ray Train worker group, evaluate, export; returns the summary."""
    from cluster.local import connect

    started = time.time()
    examples = load_examples(cfg, min_per_class=2)
    train_rows, val_rows = train_val_split(
        examples, fraction=cfg.split.validation_fraction, task=cfg.task, seed=cfg.seed
    )
    encoded = encode(cfg, examples)
    resources = connect(address=address, worker_logs=worker_logs)
    check_fit(cfg, resources=resources, n_train=len(train_rows))
    sweep = SweepDir.of(cfg)
    run = sweep.train_run(time.strftime("%Y%m%d-%H%M%S"))
    spec = fit_spec(cfg, records_uri=run.records, export_uri=run.model if export else None)
    record, result = fit_split(
        spec,
        encoded=encoded,
        train_rows=train_rows,
        val_rows=val_rows,
        scaling=cfg.scaling,
        name=posixpath.basename(run.uri.rstrip("/")),
        storage_path=sweep.uri,  # Ray Train's run directory is the run's
    )
    summary = {
        "name": cfg.name,
        "task": cfg.task,
        "model": cfg.model.path,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "metrics": record.metrics,
        "history": record.history,
        "before": record.before,
        "trainable_params": record.trainable_params,
        "total_params": record.total_params,
        "memory": record.memory,  # per rank: resident MiB at start and peak
        "config": cfg.model_dump(mode="json"),
        "wall_s": round(time.time() - started, 1),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model_dir": spec.export_uri,
    }
    write_json(run.metrics, summary)
    summary["metrics_path"] = run.metrics
    return summary


def fit_split(
    spec, *, encoded, train_rows, val_rows, scaling, name: str, storage_path: str
) -> tuple[FoldRecord, object]:
    """One Ray Train fit on one (train, evaluation) split: its fold record and the Train result.

    `zerotune train` (validation split) and the sweep refit (held-out test split) both end here.
    """
    from trainer.launch import build_trainer

    trainer = build_trainer(
        spec=spec,
        encoded=encoded,
        folds=[(train_rows, val_rows)],
        scaling=scaling,
        name=name,
        storage_path=storage_path,
    )
    result = trainer.fit()
    records = FitRecords(spec.records_uri)
    folds, oom = records.folds(), records.oom()
    ended = classify(folds=folds, k=1, oom=oom, error=result.error)
    if ended.outcome is Outcome.OUT_OF_MEMORY:
        detail = oom.error if oom is not None else str(result.error).splitlines()[0][:300]
        raise TrainingError(f"{ended}: {detail}", fix=OOM_FIX)
    if ended.outcome is Outcome.DIVERGED:
        raise TrainingError(
            f"loss became non-finite: {ended}", fix="lower train.learning_rate or raise train.warmup_ratio"
        )
    if ended.outcome is Outcome.ERROR:
        raise TrainingError(f"training failed: {result.error}", fix="see the worker log above")
    if ended.outcome is not Outcome.COMPLETED:
        raise TrainingError(f"training ended without recording its fold ({ended})", fix="see the worker log above")
    return folds[0], result
