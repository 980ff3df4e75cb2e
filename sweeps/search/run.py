"""`zerotune sweep run`: folds once, then Ray Tune + Optuna over trials that each fit all folds.

Everything durable lands under `<storage.path>/<name>/`; running the same
command again restores the Tune experiment there, so finished trials are kept
and unfinished ones resume from their last checkpoint. A resumed sweep runs the
configuration it started with (sweeps.search.resume); Ctrl+C stops it as
`interrupted`, resumable, without the final refit.
"""

from __future__ import annotations

import logging
import time

from sweeps import lease
from sweeps.config import SweepConfig
from sweeps.console import NORMAL, VERBOSE, RunConsole
from sweeps.layout import SweepDir, TrialState, check_trusted, check_writable
from sweeps.preflight.checks import max_concurrent, trial_bundles, trials_the_ceiling_fits
from sweeps.preflight.data import encode, fingerprint
from sweeps.preflight.validate import preflight
from sweeps.results.collect import collect, live_trials
from sweeps.results.environment import write_sweep_record
from sweeps.search.baseline import baseline, tfidf_baseline
from sweeps.search.folds import Folds
from sweeps.search.resume import resume_changes, with_changes
from zerotune.errors import ConfigError, StorageError

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


def run_sweep(
    cfg: SweepConfig,
    *,
    address: str | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    console: RunConsole | None = None,
) -> dict:
    """Run or resume the sweep; its summary. `summary["interrupted"]`: the run was stopped (Ctrl+C, the storage
    watch) before every trial ended, so it neither refits nor counts as finished; the same command resumes it.
    `retry_failed`: a resumed sweep runs its failed trials again (sweeps.search.tuner.restore_tuner).
    `console`: zerotune's view (sweeps.search.view) on it replaces Tune's reporter and the workers' lines, which go to
    its log; without one, `progress` shows those."""
    from ray import tune

    from cluster.local import cluster_capacity, connect
    from cluster.scale import requested
    from sweeps.search.pending import pending_watch
    from sweeps.search.study import sync_study
    from sweeps.search.trial import run_trial, trial_actor_resources
    from sweeps.search.tuner import new_tuner, restore_tuner
    from sweeps.search.watch import StorageWatch, raise_if_storage_broke
    from sweeps.tracking.callback import end_tracking, trackers
    from trainer.storage import filesystem

    started = time.time()
    sweep = SweepDir.of(cfg)
    saved = sweep.read(sweep.config)
    # A resumed sweep runs the configuration it started with: any other change is refused here, before anything
    # runs or is written; the allowed ones are applied below.
    changes = resume_changes(saved, cfg, config_path=sweep.config) if saved is not None else []

    show = console.line if console is not None else (lambda text: None)
    progress = progress and console is None  # Tune's own reporter, when no view replaces it
    worker_logs = progress or console is not None  # a console keeps the workers' output in its log

    def ceiling():
        connect(address=address, worker_logs=worker_logs)
        return cluster_capacity()  # what the cluster can grow to, not only the nodes up now

    checked = preflight(cfg, resources=ceiling)
    examples, folds = checked.examples, checked.folds
    # One writer per sweep (sweeps.lease): taken once pre-flight passed, before the first write; released however
    # the run ends (a SIGKILLed driver's is taken over by the next run).
    with lease.hold(sweep.uri, timeout_s=cfg.storage.lease_timeout_s) as held:
        for line in held.takeovers:
            show(f"sweep {cfg.name}: {line}")
        # Nothing is written until every check has passed: a bad input leaves no partial sweep.
        check_writable(sweep.uri)
        save_or_check_folds(sweep, folds, examples)
        if console is not None:
            console.attach(sweep.log)  # the sweep is written from here on: its log with it
        if saved is None:
            sweep.write(sweep.config, cfg.model_dump(mode="json"))  # once, when the sweep starts
        elif changes:
            log.warning("sweep %s resumes with changes: %s", cfg.name, "; ".join(map(str, changes)))
            show(f"sweep {cfg.name}: resumes with changes: {'; '.join(map(str, changes))}")
            sweep.write(sweep.config, with_changes(saved, changes))
        write_sweep_record(sweep, sweep.read(sweep.config))  # this run's packages, GPUs, commit and command
        sweep.write(
            sweep.data,
            {
                "n_rows": len(examples),
                "dropped": examples.dropped,
                "label_names": examples.label_names,
                "n_test": len(folds.test),
                "baseline": baseline(cfg.task, examples, folds),
                "tfidf_baseline": tfidf_baseline(cfg.task, examples, folds),
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
        trainable = tune.with_resources(trainable, trial_actor_resources())
        fs, tune_path = filesystem(sweep.tune)  # Tune's experiment directory, as its filesystem names it
        capacity = checked.resources
        concurrent = max_concurrent(cfg, capacity, done=trials_done(sweep, retry_failed=retry_failed))
        fitting = trials_the_ceiling_fits(cfg, capacity, limit=concurrent)  # what the autoscaler is asked for
        # One bundle per worker of each trial that may run at once: the autoscaler starts those nodes now, while the
        # first trial is placed, instead of one trial's worth at a time as placement groups wait.
        asks = trial_bundles(cfg)
        log.warning("sweep %s: %d trials at once; %s", cfg.name, concurrent, capacity.describe())
        show(
            f"sweep {cfg.name}: {len(examples)} rows, {cfg.folds.k} folds ({folds.strategy}), "
            f"{cfg.search.num_trials} trials, {concurrent} at once -> {sweep.uri}"
        )
        if console is not None:
            here = "" if console.verbosity >= VERBOSE else " (-v shows them here)"
            show(f"sweep {cfg.name}: library logs -> {sweep.log}{here}")
        asked = []  # the autoscaler request's `ask` while it stands (cluster.scale.requested)
        callbacks = [
            StorageWatch(sweep.uri, lease=held),  # stops the run should another take the sweep over
            pending_watch(
                sweep.uri,
                asks=asks,
                ceiling=capacity.describe(),
                requested=capacity.autoscaling,
                ask=lambda trials: asked and asked[0](asks * trials),  # shrinks it as trials end
                num_trials=cfg.search.num_trials,
                concurrent=fitting,
            ),
        ]
        callbacks += trackers(cfg, sweep.uri)  # MLflow, TensorBoard, W&B runs logged from the driver
        if console is not None and console.verbosity >= NORMAL:
            from sweeps.search.view import sweep_view

            callbacks.append(
                sweep_view(cfg, sweep_uri=sweep.uri, concurrent=concurrent, write=show, heartbeat_s=console.heartbeat_s)
            )
        if tune.Tuner.can_restore(tune_path, storage_filesystem=fs):
            log.warning("resuming sweep %s from %s", cfg.name, sweep.tune)
            show(f"sweep {cfg.name}: resuming from {sweep.uri}")
            check_trusted(sweep.uri)  # restoring unpickles what is stored there
            if retry_failed:
                # Tune forgets a failed trial it restarts: the summary keeps how it ended (sweeps.results.collect).
                sweep.write(sweep.summary, collect(sweep.uri, cfg=cfg, finished=True))
            tuner = restore_tuner(
                cfg,
                trainable,
                fs=fs,
                tune_path=tune_path,
                concurrent=concurrent,
                retry_failed=retry_failed,
                callbacks=callbacks,
                progress=progress,
            )
        else:
            tuner = new_tuner(
                cfg,
                trainable,
                fs=fs,
                tune_path=tune_path,
                concurrent=concurrent,
                progress=progress,
                callbacks=callbacks,
            )
        fit_started = time.monotonic()
        try:
            with requested(asks * fitting, autoscaling=capacity.autoscaling) as ask:  # withdrawn as the run ends
                asked.append(ask)
                grid = tuner.fit()
        except Exception:
            raise_if_storage_broke(sweep.uri, cfg.storage.path, cfg.name, held)
            raise
        sync_study(cfg)  # where the driver keeps the study's file, the stored copy as this run ends
        raise_if_storage_broke(sweep.uri, cfg.storage.path, cfg.name, held)
        budget = cfg.search.time_budget_s
        budget_spent = budget is not None and time.monotonic() - fit_started >= budget
        interrupted = ended_early(sweep, grid, cfg.search.num_trials, budget_spent=budget_spent)
        summary = collect(sweep.uri, cfg=cfg, grid=grid, wall_s=time.time() - started, interrupted=interrupted)
        summary["tokenize_s"] = round(tokenize_s, 3)  # the driver's one tokenisation pass; workers index into it
        summary["concurrency"] = {"trials": concurrent, "source": capacity.source, "ceiling": capacity.describe()}
        summary["resumed"] = saved is not None
        summary["applied_changes"] = [c.to_json() for c in changes]
        sweep.write(sweep.summary, summary)
        if interrupted:
            log.warning("sweep %s was interrupted: run the same command again to resume it", cfg.name)
            show(f"sweep {cfg.name} was interrupted: run the same command again to resume it")
            return summary  # not finished: no refit
        if cfg.final.refit:
            from sweeps.final.refit import refit
            from sweeps.search.refit_view import RefitProgress, refit_done, refit_started

            if summary["best"]:
                n_test = len(folds.test)
                show(refit_started(summary["best"]["trial_id"], n_train=len(examples) - n_test, n_test=n_test))
            heartbeat_s = console.heartbeat_s if console is not None and console.verbosity >= NORMAL else 0
            with RefitProgress(sweep, write=show, every_s=heartbeat_s):
                # The rows and tokens this run already holds: the refit neither reads nor tokenises the data again.
                summary["refit"] = refit(cfg, address=address, worker_logs=worker_logs, data=(examples, encoded))
            show(refit_done(summary["refit"], cfg.metric))
        end_tracking(callbacks, summary)  # every trial synced once more; the sweep's run gets the report
        return summary


def trials_done(sweep: SweepDir, *, retry_failed: bool = False) -> int:
    """Trials a resumed sweep will not run again, from the summary its last run wrote (0 when there is none): they no
    longer count towards the trials to run at once. `retry_failed`: failed ones run again."""
    ended = {TrialState.COMPLETED, TrialState.PRUNED} | (set() if retry_failed else {TrialState.FAILED})
    try:
        trials = sweep.read(sweep.summary, {}).get("trials", [])
    except StorageError:
        return 0
    return sum(t.get("state") in ended for t in trials)


def ended_early(sweep: SweepDir, grid, num_trials: int, *, budget_spent: bool = False) -> bool:
    """Tune returns normally when it is stopped (Ctrl+C, or the storage watch's SIGUSR1): the sweep has not ended
    while Tune's saved state shows a trial it had not ended, or fewer trials than asked for were created (unless
    search.time_budget_s was spent: then the searcher stopped proposing them, and the sweep ended)."""
    return bool(live_trials(sweep)) or (len(grid) < num_trials and not budget_spent)
