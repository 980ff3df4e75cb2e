"""`zerotune sweep run`: folds once, then Ray Tune + Optuna over trials that each fit all folds.

Everything durable lands under `<storage.path>/<name>/`; running the same
command again restores the Tune experiment there, so finished trials are kept
and unfinished ones resume from their last checkpoint.
"""

from __future__ import annotations

import logging
import posixpath
import time

from sweeps.config import SweepConfig
from sweeps.layout import SweepDir, check_writable
from sweeps.preflight.checks import max_concurrent
from sweeps.preflight.data import encode, fingerprint
from sweeps.preflight.validate import preflight
from sweeps.results.collect import collect
from sweeps.search.baseline import baseline
from sweeps.search.folds import Folds
from sweeps.search.space import tune_space
from zerotune.errors import ConfigError

log = logging.getLogger(__name__)


def save_or_check_folds(sweep: SweepDir, folds: Folds, examples) -> None:
    """Folds are made once: a resumed sweep must see the same rows in the same folds."""
    record = {
        "fingerprint": fingerprint(examples),
        "n_rows": len(examples),
        "label_names": examples.label_names,
        **folds.to_json(),
    }
    saved = sweep.read(sweep.folds)
    if saved is None:
        sweep.write(sweep.folds, record)
    elif saved["fingerprint"] != record["fingerprint"] or saved["folds"] != record["folds"]:
        raise ConfigError(
            [
                (
                    "name",
                    f"the data or folds differ from those saved at {sweep.folds}",
                    "use a new sweep name, or restore the original data",
                )
            ]
        )


def run_sweep(cfg: SweepConfig, *, address: str | None = None, progress: bool = True) -> dict:
    from ray import tune

    from cluster.local import connect, free_resources
    from sweeps.search.trial import run_trial
    from sweeps.search.watch import StorageWatch, raise_if_storage_broke
    from trainer.storage import filesystem

    started = time.time()
    sweep = SweepDir.of(cfg)
    checked = preflight(cfg, resources=lambda: connect(address=address, worker_logs=progress))
    examples, folds = checked.examples, checked.folds
    # Nothing is written until every check has passed: a bad input leaves no partial sweep.
    check_writable(sweep.uri)
    save_or_check_folds(sweep, folds, examples)
    sweep.write(sweep.config, cfg.model_dump(mode="json"))
    sweep.write(
        sweep.data,
        {
            "n_rows": len(examples),
            "dropped": examples.dropped,
            "label_names": examples.label_names,
            "n_test": len(folds.test),
            "baseline": baseline(cfg.task, examples, folds),
        },
    )
    t_tokenize = time.perf_counter()
    encoded = encode(cfg, examples)  # once per sweep; every trial and fold indexes into it
    tokenize_s = time.perf_counter() - t_tokenize
    log.warning(
        "sweep %s: %d rows, %d folds (%s), %d trials -> %s",
        cfg.name,
        len(examples),
        cfg.folds.k,
        folds.strategy,
        cfg.search.num_trials,
        sweep.uri,
    )

    trainable = tune.with_parameters(run_trial, cfg=cfg, sweep_uri=sweep.uri, encoded=encoded, folds=folds.folds)
    # The trial actor only waits on its worker group, which holds the real CPUs/GPUs;
    # Tune refuses an empty request, so it asks for a sliver (local Ray adds one CPU for these).
    trainable = tune.with_resources(trainable, {"cpu": 0.001})
    fs, tune_path = filesystem(sweep.tune)  # Tune's experiment directory, as its filesystem names it
    if tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
        log.warning("resuming sweep %s from %s", cfg.name, sweep.tune)
        tuner = tune.Tuner.restore(
            tune_path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            storage_filesystem=fs,
        )
    else:
        tuner = _new_tuner(
            cfg,
            trainable,
            fs=fs,
            tune_path=tune_path,
            concurrent=max_concurrent(cfg, free_resources()),
            progress=progress,
            callbacks=[StorageWatch(sweep.uri)],
        )
    try:
        grid = tuner.fit()
    except Exception:
        raise_if_storage_broke(sweep.uri, cfg.storage.path, cfg.name)
        raise
    raise_if_storage_broke(sweep.uri, cfg.storage.path, cfg.name)
    summary = collect(sweep.uri, cfg=cfg, grid=grid, wall_s=time.time() - started)
    summary["tokenize_s"] = round(tokenize_s, 3)  # the driver's one tokenisation pass; workers index into it
    sweep.write(sweep.summary, summary)
    if cfg.final.refit:
        from sweeps.final.refit import refit

        # The rows and tokens this run already holds: the refit neither reads nor tokenises the data again.
        summary["refit"] = refit(cfg, address=address, worker_logs=progress, data=(examples, encoded))
    return summary


def _new_tuner(cfg: SweepConfig, trainable, *, fs, tune_path: str, concurrent: int, progress: bool, callbacks: list):
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=max(2, min(10, cfg.search.num_trials // 3)))
    searcher = OptunaSearch(
        metric="objective",
        mode=cfg.mode,
        sampler=sampler,
        points_to_evaluate=list(cfg.search.initial_points or []) or None,
    )
    return tune.Tuner(
        trainable,
        param_space=tune_space(cfg.search.space),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(cfg),
            num_samples=cfg.search.num_trials,
            max_concurrent_trials=concurrent,
            # Not reuse_actors: Train's TuneReportCallback reports through a queue actor that dies with the
            # trial session that made it, so a reused trial actor's next Train run fails (Ray 2.60).
        ),
        run_config=tune.RunConfig(
            name=posixpath.basename(tune_path),
            storage_path=posixpath.dirname(tune_path),
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(
                max_failures=0
            ),  # Train restarts worker groups; a trial that still fails stays failed
            verbose=1 if progress else 0,
            callbacks=callbacks,
        ),
    )


def _scheduler(cfg: SweepConfig):
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    sched = cfg.search.scheduler
    if sched.type == "asha":
        return ASHAScheduler(
            time_attr="folds_done",
            metric="objective",
            mode=cfg.mode,
            max_t=cfg.folds.k,
            grace_period=sched.grace_folds,
            reduction_factor=sched.reduction_factor,
        )
    if sched.type == "median":
        return MedianStoppingRule(
            time_attr="folds_done",
            metric="objective",
            mode=cfg.mode,
            grace_period=sched.grace_folds,
            min_samples_required=2,
        )
    return None
