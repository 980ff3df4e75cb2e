"""`zerotune train`: one fit on a train/validation split, with export and a metrics JSON."""

from __future__ import annotations

import logging
import time

from zerotune.errors import TrainingError
from trainer.storage import join, read_json, write_json

from sweeps.config import SweepConfig
from sweeps.search.folds import train_val_split
from sweeps.preflight.data import encode, fit_spec, load_examples
from sweeps.preflight.checks import check_fit
from sweeps.search.run import storage_root

log = logging.getLogger(__name__)


def run_fit(cfg: SweepConfig, *, address: str | None = None, export: bool = True, worker_logs: bool = True) -> dict:
    """Split, tokenize, train on a Ray Train worker group, evaluate, export; returns the summary."""
    from cluster.local import connect

    started = time.time()
    examples = load_examples(cfg, min_per_class=2)
    train_rows, val_rows = train_val_split(examples, fraction=cfg.split.validation_fraction, task=cfg.task, seed=cfg.seed)
    encoded = encode(cfg, examples)
    resources = connect(address=address, worker_logs=worker_logs)
    check_fit(cfg, resources=resources, n_train=len(train_rows))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_uri = join(storage_root(cfg.storage.path), cfg.name, f"train-{stamp}")
    spec = fit_spec(cfg, records_uri=join(run_uri, "records"), export_uri=join(run_uri, "model") if export else None)
    record, result = fit_split(
        spec, encoded=encoded, train_rows=train_rows, val_rows=val_rows, scaling=cfg.scaling,
        name=f"train-{stamp}", storage_path=join(storage_root(cfg.storage.path), cfg.name),
    )
    summary = {
        "name": cfg.name, "task": cfg.task, "model": cfg.model.path,
        "n_train": len(train_rows), "n_val": len(val_rows),
        "metrics": record["metrics"], "history": record["history"], "before": record.get("before"),
        "trainable_params": record["trainable_params"], "total_params": record["total_params"],
        "memory": record.get("memory"),  # per rank: resident MiB at start and peak
        "config": cfg.model_dump(mode="json"), "wall_s": round(time.time() - started, 1),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model_dir": spec.export_uri,
    }
    write_json(join(run_uri, "metrics.json"), summary)
    summary["metrics_path"] = join(run_uri, "metrics.json")
    return summary


def fit_split(spec, *, encoded, train_rows, val_rows, scaling, name: str, storage_path: str) -> tuple[dict, object]:
    """One Ray Train fit on one (train, evaluation) split: its fold record and the Train result.

    `zerotune train` (validation split) and the sweep refit (held-out test split) both end here.
    """
    from trainer.launch import build_trainer

    trainer = build_trainer(spec=spec, encoded=encoded, folds=[(train_rows, val_rows)], scaling=scaling, name=name, storage_path=storage_path)
    result = trainer.fit()
    from trainer.loop import read_oom

    oom = read_oom(spec.records_uri)
    if oom is not None:
        raise TrainingError(
            f"out of memory at fold {oom['fold']} epoch {oom['epoch']} step {oom['step']}: {oom['error']}",
            fix="lower train.batch_size (raise train.grad_accum to keep the global batch) or model.max_length, or use deepspeed.zero_stage 3 / offload",
        )
    if result.error is not None:
        raise TrainingError(f"training failed: {result.error}", fix="see the worker log above; lower the learning rate if the loss diverged")
    record = read_json(join(spec.records_uri, "fold-0.json"))
    if record.get("diverged"):
        raise TrainingError(f"loss became non-finite at {record['diverged']}", fix="lower train.learning_rate or raise train.warmup_ratio")
    return record, result
