"""The Ray Tune Tuner of a sweep: a new one, or the one restored from the sweep's `tune/` directory.

A restored Tuner runs the experiment as it was saved: Tune reloads the search generator's state (trials created,
trial count, concurrency) and the searcher's (Optuna's study) from `tune/`, and `Tuner.restore` takes no
TuneConfig. The allowed resume changes (sweeps.search.resume) would do nothing, so the restored tuner gets a
search generator that re-applies this run's trial count and concurrency once Tune has loaded the saved state.
"""

from __future__ import annotations

import dataclasses
import posixpath

from ray import tune
from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from sweeps.config import SweepConfig
from zerotune.errors import ClusterError


class ResumedSearch(SearchGenerator):
    """Tune's search generator around the sweep's Optuna searcher, restored from the saved state, then given
    `num_trials` (never fewer than were created) and `concurrent` trials at once."""

    def __init__(self, searcher, *, num_trials: int, concurrent: int):
        super().__init__(ConcurrencyLimiter(searcher, max_concurrent=concurrent))
        self.num_trials, self.concurrent = num_trials, concurrent

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)  # the saved counter, trial count, limiter and Optuna study
        self._apply()

    def add_configurations(self, experiments) -> None:
        # Tune starts afresh when its saved state cannot be loaded; a restored run passes it no trial count.
        super().add_configurations(experiments)
        self._apply()

    def _apply(self) -> None:
        state = self.get_state()
        self.set_state({**state, "total_samples": max(self.num_trials, state["counter"])})
        self.searcher.set_max_concurrency(self.concurrent)


# Cloud credential variables (and their configuration) by prefix: AWS's keys and session tokens, Google's
# GOOGLE_APPLICATION_CREDENTIALS and the like; Tune copies some of them today, and a copied list would miss new ones.
CREDENTIAL_PREFIXES = ("AWS_", "GOOGLE_")


def keep_credentials_out_of_trial_actors() -> None:
    """Stop Tune from copying the driver's cloud credentials into every trial actor's runtime_env.

    Tune (ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE) adds AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the
    session tokens to the trial actors' runtime_env, which Ray writes to its runtime_env_agent.log and keeps in its
    actor table (the dashboard's): the secret would outlive the sweep in logs. Every AWS_* and GOOGLE_* variable is
    dropped from that set. Trial actors run on the driver's node and, as the training workers always do, take
    credentials from the node's environment or the SDK's chain instead."""
    from ray.tune.execution import class_cache

    # Read at each actor class made, so replacing the module's set is enough.
    class_cache.ENV_VARS_TO_PROPAGATE = {
        name for name in class_cache.ENV_VARS_TO_PROPAGATE if not name.startswith(CREDENTIAL_PREFIXES)
    }


def new_tuner(cfg: SweepConfig, trainable, *, fs, tune_path: str, concurrent: int, progress: bool, callbacks: list):
    keep_credentials_out_of_trial_actors()
    return tune.Tuner(
        trainable,
        param_space={},  # the searcher holds the space (define-by-run: conditional dimensions)
        tune_config=tune.TuneConfig(
            search_alg=_searcher(cfg),
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


def restore_tuner(
    cfg: SweepConfig,
    trainable,
    *,
    fs,
    tune_path: str,
    concurrent: int,
    retry_failed: bool,
    callbacks: list,
    progress: bool = True,
):
    """The saved experiment with its finished trials kept and its unfinished ones resumed (same trial, from its
    last checkpoint). `retry_failed`: each failed trial runs again from scratch as a new trial with the same
    parameters, as Optuna's RetryFailedTrialCallback re-queues one (the failed attempt stays on record). `progress`:
    Tune's own reporter, as new_tuner's."""
    keep_credentials_out_of_trial_actors()
    tuner = tune.Tuner.restore(
        tune_path,
        trainable=trainable,  # this run's config: the allowed changes (checkpointing) reach the trials through it
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=retry_failed,
        storage_filesystem=fs,
    )
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        raise ClusterError(
            "a sweep cannot be resumed through a Ray Client (ray://) connection",
            field="--address",
            fix="pass the cluster's GCS address (HOST:6379), or submit the sweep as a job (`zerotune job submit`)",
        )
    # Tuner.restore offers no way to pass a TuneConfig: the restored one (pickled when the sweep started) is
    # replaced by the same config with this run's search generator, and the run config's callbacks by this run's.
    restored = internal._tune_config
    internal._tune_config = dataclasses.replace(
        restored,
        search_alg=ResumedSearch(_searcher(cfg), num_trials=cfg.search.num_trials, concurrent=concurrent),
        num_samples=cfg.search.num_trials,
        max_concurrent_trials=None,  # the limiter is inside ResumedSearch
    )
    internal._run_config.callbacks = callbacks  # the storage watch watches where this run writes
    internal._run_config.verbose = 1 if progress else 0  # Tune's reporter, unless zerotune's view replaces it
    return tuner


def _searcher(cfg: SweepConfig):
    from sweeps.search.searcher import make_searcher

    return make_searcher(cfg)


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
