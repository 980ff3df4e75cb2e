"""`zerotune sweep run`: folds once, then Ray Tune + Optuna over trials that each fit all folds.

Everything durable lands under `<storage.path>/<name>/`; running the same
command again restores the Tune experiment there, so finished trials are kept
and unfinished ones resume from their last checkpoint.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np

from zerotune.errors import ConfigError, StorageError
from trainer.storage import exists, join, read_json, write_json

from sweeps.config import SweepConfig
from sweeps.search.folds import Folds, make_folds, pick_strategy
from sweeps.preflight.checks import check_fit, max_concurrent
from sweeps.preflight.data import encode, load_examples
from sweeps.results.collect import collect
from sweeps.search.space import tune_space

log = logging.getLogger(__name__)


def sweep_uri(cfg: SweepConfig) -> str:
    """Absolute: trial actors and workers run in other working directories."""
    return join(storage_root(cfg.storage.path), cfg.name)


def storage_root(path: str) -> str:
    import os

    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def prepare_sweep(cfg: SweepConfig):
    """Data, folds and tokens for a sweep: checks everything that needs no cluster."""
    strategy = pick_strategy(cfg.folds.strategy, cfg.task, cfg.data.group_column is not None)
    need = cfg.folds.k + (1 if cfg.folds.test_fraction else 0) if strategy == "stratified" else 2
    examples = load_examples(cfg, min_per_class=need, min_rows=cfg.folds.k)
    folds = make_folds(examples, k=cfg.folds.k, strategy=cfg.folds.strategy, task=cfg.task, test_fraction=cfg.folds.test_fraction, seed=cfg.seed)
    if not cfg.search.space.model_dump(exclude_none=True):
        raise ConfigError([("search.space", "nothing to search", "add at least one of learning_rate, batch_size, epochs, ... (see examples/)")])
    return examples, folds


def fingerprint(examples) -> str:
    h = hashlib.sha256()
    for text in examples.texts:
        h.update(text.encode("utf-8", "replace"))
        h.update(b"\0")
    if examples.labels is not None:
        h.update(np.asarray(examples.labels).tobytes())
    return h.hexdigest()[:16]


def save_or_check_folds(uri: str, folds: Folds, examples) -> None:
    """Folds are made once: a resumed sweep must see the same rows in the same folds."""
    record = {"fingerprint": fingerprint(examples), "n_rows": len(examples), "label_names": examples.label_names, **folds.to_json()}
    path = join(uri, "folds.json")
    if exists(path):
        saved = read_json(path)
        if saved["fingerprint"] != record["fingerprint"] or saved["folds"] != record["folds"]:
            raise ConfigError([("name", f"the data or folds differ from those saved at {path}", "use a new sweep name, or restore the original data")])
        return
    write_json(path, record)


def run_sweep(cfg: SweepConfig, *, address: str | None = None, progress: bool = True) -> dict:
    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from cluster.local import connect, free_resources

    started = time.time()
    uri = sweep_uri(cfg)
    examples, folds = prepare_sweep(cfg)
    resources = connect(address=address, worker_logs=progress)
    check_fit(cfg, resources=resources, n_train=min(len(t) for t, _ in folds.folds))
    # Nothing is written until every check has passed: a bad input leaves no partial sweep.
    check_writable(uri)
    save_or_check_folds(uri, folds, examples)
    write_json(join(uri, "config.json"), cfg.model_dump(mode="json"))
    write_json(join(uri, "data.json"), {
        "n_rows": len(examples), "dropped": examples.dropped, "label_names": examples.label_names,
        "n_test": len(folds.test), "baseline": baseline(cfg, examples, folds),
    })
    t_tokenize = time.perf_counter()
    encoded = encode(cfg, examples)  # once per sweep; every trial and fold indexes into it
    tokenize_s = time.perf_counter() - t_tokenize
    log.warning("sweep %s: %d rows, %d folds (%s), %d trials -> %s", cfg.name, len(examples), cfg.folds.k, folds.strategy, cfg.search.num_trials, uri)

    from sweeps.search.trial import run_trial
    from sweeps.search.watch import StorageWatch, raise_if_storage_broke

    trainable = tune.with_parameters(run_trial, cfg=cfg, sweep_uri=uri, encoded=encoded, folds=folds.folds)
    # The trial actor only waits on its worker group, which holds the real CPUs/GPUs;
    # Tune refuses an empty request, so it asks for a sliver (local Ray adds one CPU for these).
    trainable = tune.with_resources(trainable, {"cpu": 0.001})
    tune_dir = join(uri, "tune")
    from trainer.storage import filesystem

    fs, fs_path = filesystem(uri)
    if tune.Tuner.can_restore(join(fs_path, "tune"), storage_filesystem=fs):
        log.warning("resuming sweep %s from %s", cfg.name, tune_dir)
        tuner = tune.Tuner.restore(join(fs_path, "tune"), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False, storage_filesystem=fs)
    else:
        import optuna

        sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=max(2, min(10, cfg.search.num_trials // 3)))
        searcher = OptunaSearch(metric="objective", mode=cfg.mode, sampler=sampler, points_to_evaluate=list(cfg.search.initial_points or []) or None)
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(cfg.search.space),
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=_scheduler(cfg),
                num_samples=cfg.search.num_trials, max_concurrent_trials=max_concurrent(cfg, free_resources()),
                # Not reuse_actors: Train's TuneReportCallback reports through a queue actor that dies with the
                # trial session that made it, so a reused trial actor's next Train run fails (Ray 2.60).
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=fs_path, storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=0),  # Train restarts worker groups; a trial that still fails stays failed
                verbose=1 if progress else 0,
                callbacks=[StorageWatch(uri)],
            ),
        )
    try:
        grid = tuner.fit()
    except Exception:
        raise_if_storage_broke(uri, cfg.storage.path, cfg.name)
        raise
    raise_if_storage_broke(uri, cfg.storage.path, cfg.name)
    summary = collect(uri, cfg=cfg, grid=grid, wall_s=time.time() - started)
    summary["tokenize_s"] = round(tokenize_s, 3)  # the driver's one tokenisation pass; workers index into it
    write_json(join(uri, "summary.json"), summary)
    if cfg.final.refit:
        from sweeps.final.refit import refit

        summary["refit"] = refit(cfg, address=address, worker_logs=progress)
    return summary


def baseline(cfg: SweepConfig, examples, folds: Folds) -> dict | None:
    """The trivial predictor on the same folds: majority class (classification) or training mean (regression)."""
    from sklearn.metrics import f1_score, mean_squared_error

    if examples.labels is None:
        return None
    scores = []
    for train_rows, val_rows in folds.folds:
        y_train, y_val = examples.labels[train_rows], examples.labels[val_rows]
        if cfg.task == "classification":
            majority = np.bincount(y_train).argmax()
            pred = np.full(len(y_val), majority)
            labels = list(range(len(examples.label_names)))
            scores.append({"f1_macro": float(f1_score(y_val, pred, labels=labels, average="macro", zero_division=0)), "accuracy": float((pred == y_val).mean())})
        else:
            pred = np.full(len(y_val), float(y_train.mean()))
            scores.append({"mse": float(mean_squared_error(y_val, pred))})
    keys = scores[0].keys()
    return {"name": "majority class" if cfg.task == "classification" else "training mean", **{k: float(np.mean([s[k] for s in scores])) for k in keys}, "per_fold": scores}


def _scheduler(cfg: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    sched = cfg.search.scheduler
    if sched.type == "asha":
        return ASHAScheduler(time_attr="folds_done", metric="objective", mode=cfg.mode, max_t=cfg.folds.k, grace_period=sched.grace_folds, reduction_factor=sched.reduction_factor)
    if sched.type == "median":
        return MedianStoppingRule(time_attr="folds_done", metric="objective", mode=cfg.mode, grace_period=sched.grace_folds, min_samples_required=2)
    return None


def check_writable(uri: str, *, keep: bool = True) -> None:
    """Write and delete a probe file: fail now, not after hours of training. keep=False leaves no directory behind."""
    from trainer.storage import filesystem

    existed = exists(uri)
    probe = join(uri, ".write-test")
    try:
        write_json(probe, {"ok": True})
    except StorageError as exc:
        raise StorageError(exc.message, field="storage.path", fix="choose a storage.path this user can write (and that every node can reach)") from None
    fs, path = filesystem(probe)
    fs.delete_file(path)
    if not keep and not existed:
        fs.delete_dir(filesystem(uri)[1])
