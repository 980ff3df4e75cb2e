"""`zerotune train`: one fit on a train/validation split, with export and a metrics JSON."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sweeps.config import SweepConfig
from sweeps.layout import FitDir, SweepDir
from sweeps.preflight.checks import check_fit
from sweeps.preflight.data import encode, fit_spec, load_examples
from sweeps.results.environment import write_fit_record
from sweeps.search.folds import train_val_split
from trainer.launch import Fit
from trainer.outcome import Outcome, classify
from trainer.records import FitRecords, FoldRecord
from trainer.storage import write_json
from zerotune.errors import ConfigError, TrainingError

log = logging.getLogger(__name__)

OOM_FIX = (
    "lower train.batch_size (raise train.grad_accum to keep the global batch) or model.max_length, "
    "or use deepspeed.zero_stage 3 / offload"
)


def run_fit(cfg: SweepConfig, *, address: str | None = None, export: bool = True, worker_logs: bool = True) -> dict:
    """Split, tokenize, train on a Ray Train worker group, evaluate, export; returns the summary."""
    return run_fits([cfg], address=address, export=export, worker_logs=worker_logs)[0]


@dataclass(frozen=True)
class _Run:
    """One config's fit, prepared: where it writes, what it trains on."""

    cfg: SweepConfig
    run: FitDir
    fit: Fit
    n_train: int
    n_val: int


def run_fits(
    cfgs: list[SweepConfig], *, address: str | None = None, export: bool = True, worker_logs: bool = True
) -> list[dict]:
    """`zerotune train` of each config in turn on ONE Ray Train worker group: its start is paid once, and each
    config's records, metrics and model land where its own `zerotune train` puts them. The configs must share
    their scaling (one worker group) and differ in name (one run directory each). Returns their summaries."""
    from cluster.local import connect

    started = time.time()
    _check_one_group(cfgs)
    runs = [_prepare(cfg, export=export) for cfg in cfgs]
    resources = connect(address=address, worker_logs=worker_logs)
    for r in runs:
        check_fit(r.cfg, resources=resources, n_train=r.n_train)
    storage_path, name = runs[0].run.ray_run()  # Ray Train's run directory is the first config's run
    records, result = fit_splits([r.fit for r in runs], scaling=cfgs[0].scaling, name=name, storage_path=storage_path)
    wall_s = round(time.time() - started, 1)
    return [_summary(r, record, result, wall_s=wall_s) for r, record in zip(runs, records, strict=True)]


def _check_one_group(cfgs: list[SweepConfig]) -> None:
    if not cfgs:
        raise ConfigError([("config", "no config to train", "pass at least one config")])
    problems = [
        (f"configs[{i}].scaling", "differs from the first config's", "give every config the same scaling group")
        for i, cfg in enumerate(cfgs)
        if cfg.scaling != cfgs[0].scaling
    ]
    names = [cfg.name for cfg in cfgs]
    problems += [
        (f"configs[{i}].name", f"{name!r} is used twice", "give each config its own name (its run directory)")
        for i, name in enumerate(names)
        if name in names[:i]
    ]
    if problems:
        raise ConfigError(problems)


def _prepare(cfg: SweepConfig, *, export: bool) -> _Run:
    """Split and tokenize; the run directory and FitSpec of this config."""
    examples = load_examples(cfg, min_per_class=2)
    train_rows, val_rows = train_val_split(
        examples, fraction=cfg.split.validation_fraction, task=cfg.task, seed=cfg.seed
    )
    run = SweepDir.of(cfg).train_run(time.strftime("%Y%m%d-%H%M%S"))
    spec = fit_spec(cfg, records_uri=run.records, export_uri=run.model if export else None)
    fit = Fit(spec=spec, encoded=encode(cfg, examples), folds=[(train_rows, val_rows)])
    return _Run(cfg=cfg, run=run, fit=fit, n_train=len(train_rows), n_val=len(val_rows))


def _summary(r: _Run, record: FoldRecord, result, *, wall_s: float) -> dict:
    """metrics.json of one config's run (also returned)."""
    summary = {
        "name": r.cfg.name,
        "task": r.cfg.task,
        "model": r.cfg.model.path,
        "n_train": r.n_train,
        "n_val": r.n_val,
        "metrics": record.metrics,
        "history": record.history,
        "before": record.before,
        "trainable_params": record.trainable_params,
        "total_params": record.total_params,
        "memory": record.memory,  # per rank: resident MiB at start and peak
        "config": r.cfg.model_dump(mode="json"),
        "wall_s": wall_s,  # of the whole worker group
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model_dir": r.fit.spec.export_uri,
    }
    write_json(r.run.metrics, summary)
    write_fit_record(r.run, kind="train", config=summary["config"], model_uri=r.fit.spec.export_uri)
    summary["metrics_path"] = r.run.metrics
    return summary


def fit_split(
    spec, *, encoded, train_rows, val_rows, scaling, name: str, storage_path: str
) -> tuple[FoldRecord, object]:
    """One Ray Train fit on one (train, evaluation) split: its fold record and the Train result (the refit)."""
    records, result = fit_splits(
        [Fit(spec=spec, encoded=encoded, folds=[(train_rows, val_rows)])],
        scaling=scaling,
        name=name,
        storage_path=storage_path,
    )
    return records[0], result


def fit_splits(fits: list[Fit], *, scaling, name: str, storage_path: str) -> tuple[list[FoldRecord], object]:
    """One worker group fits each one-fold `fits` in turn: their fold records (in order) and the Train result.

    `zerotune train` (validation split) and the sweep refit (held-out test split) both end here; the first fit
    that did not complete raises, saying how it ended.
    """
    from trainer.launch import build_trainer

    result = build_trainer(fits=fits, scaling=scaling, name=name, storage_path=storage_path).fit()
    return [_recorded_fold(fit.spec, result) for fit in fits], result


def _recorded_fold(spec, result) -> FoldRecord:
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
    return folds[0]
